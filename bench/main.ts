// Benchmark entry point: `node dist/bench/main.js <name> [options]` (or `npm run bench -- <name>`).
//
// Each benchmark runs atomio and a peer doing the same work on the same data in the same
// run, and prints the ratio (see DESIGN.md, "Measuring"). Benchmarks are not tests: they
// never fail a build; they print PASS/MISS against the targets they know.

interface Benchmark {
  describe: string;
  run: (args: string[]) => Promise<number>;
}

const benchmarks: Record<string, Benchmark> = {
  block: {
    describe: 'block face vs plain fs (pwrite + fdatasync): durable random/sequential writes, reads, open time, write amplification',
    run: async (args) => (await import('./block.js')).main(args),
  },
  kv: {
    describe: 'kv face vs lmdb-js, classic-level and better-sqlite3, all durable: puts at 1 and 64 in flight, batches, load, gets, scans, open, memory (ATOMIO_BENCH_KEYS=N)',
    run: async (args) => (await import('./kv.js')).main(args),
  },
  memcached: {
    describe: 'memcached server vs Debian memcached, one Node load generator: 90% get / 10% set, 100 B values, 10k keys, 50 connections; ops/s, p99, durability full and none',
    run: async (args) => (await import('./memcached.js')).main(args),
  },
  region: {
    describe: 'region face vs plain fs: commits of 1, 16 and 256 dirty 4 KiB pages vs pwrite of the same pages + fdatasync',
    run: async (args) => (await import('./region.js')).main(args),
  },
  stream: {
    describe: 'stream face vs fs (write + fdatasync per record) and better-sqlite3 (WAL, synchronous=FULL): durable 100-byte appends at 1 and 64 in flight',
    run: async (args) => (await import('./stream.js')).main(args),
  },
  nbd: {
    describe: 'NBD server vs qemu-nbd and nbdkit (file plugin), driven by fio: random 4 KiB and sequential 1 MiB',
    run: async (args) => (await import('./nbd.js')).runNbdBench(args),
  },
};

function usage(): void {
  const out = process.stderr;
  out.write('usage: node dist/bench/main.js <benchmark> [<benchmark> …] [--quick] [--repeats N] [--dir PATH | --tmp] [--keep] [--only CASES]\n');
  out.write('       (npm run bench -- <benchmark> …; --quick shrinks every case for a smoke run)\n\n');
  out.write('benchmarks:\n');
  for (const [name, b] of Object.entries(benchmarks)) out.write(`  ${name.padEnd(10)} ${b.describe}\n`);
}

/** `main.js NAME [NAME …] [options]`: runs each named benchmark in turn with the same options. */
async function main(argv: string[]): Promise<number> {
  let i = 0;
  while (i < argv.length && Object.hasOwn(benchmarks, argv[i]!)) i++;
  const names = argv.slice(0, i);
  const rest = argv.slice(i);
  if (names.length === 0) {
    const name = argv[0];
    if (name !== undefined && name !== '--help' && name !== '-h') process.stderr.write(`unknown benchmark: ${name}\n\n`);
    usage();
    return 2;
  }
  let code = 0;
  for (const name of names) {
    const result = await benchmarks[name]!.run(rest);
    if (result !== 0) code = result;
  }
  return code;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
