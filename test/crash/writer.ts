// The crash writer: a child process that the crash tests start and SIGKILL mid-write.
//
//   node dist/test/crash/writer.js --dir DIR --seed N --first-id N
//        [--checkpoint-bytes N] [--checkpoint-every N] [--checkpoint-at-open]
//        [--tear-from ack|open --tear-after-ms N --tear-write N] [--lbas N]
//        [--in-flight N] [--max-sectors N] [--wait-go]
//
// It opens (or creates) the store in DIR and then, forever, keeps MAX_IN_FLIGHT (or
// --in-flight N) random atomic batches in flight over lbas [0, LBA_RANGE): each batch has
// 1–8 ops, writes of 1–16 (or --max-sectors N) sectors in the pattern of its id (see common.ts) and now and then a trim; a tenth of them
// carry a TTL of an hour. Batch ids count up from --first-id in the order the batches are
// handed to the store. What it does is reported on stdout, line by line, synchronously (see
// common.ts for the protocol): the parent learns of an acknowledged batch only after its
// promise resolved, and of a batch before the store saw it.
//
// --checkpoint-bytes sets the store's checkpoint interval; --checkpoint-every N also calls
// store.checkpoint() after every N acknowledgements; --checkpoint-at-open calls it right
// after open, while the first batches are queued. --lbas N narrows the writes to lbas
// [0, N): whole segments then die within one checkpoint interval and are reused quickly.
// --in-flight 1 makes commits come one at a time, so that the engine writes them on the
// event loop's thread (src/engine/inline.ts); --max-sectors 128 makes writes of up to
// 64 KiB, whose data the engine sends from the caller's buffer as parts of one pwritev.
//
// --tear-from makes the writer kill itself inside a write, so that the kill lands in the
// middle of the log rather than wherever a timer from outside happens to fall (mostly in
// fdatasync): --tear-after-ms after the first ACK (or after it starts to open), the
// --tear-write'th write to the data file from then on writes only a prefix of its buffer
// ending at a page boundary (what the kernel leaves of a write() when SIGKILL interrupts
// it), and the process SIGKILLs itself. Other writes in flight at that moment are left as
// the kill finds them. With --tear-from open and 0 ms the kill lands in recovery's own
// writes, the first checkpoint or the first batches.
//
// --wait-go: load everything, then wait for a line on stdin before touching the store (the
// tests start the next writer while they check the last one). The writer exits when its
// stdin closes, so that it never outlives the test that started it.
//
// Without --dir it does nothing: `node --test dist/test/` runs every .js file under a test
// directory, this one included.

import { parseArgs } from 'node:util';
import { open, type AtomicOp, type Store } from '../../src/index.js';
import { HOT_RANGE, LBA_RANGE, MAX_IN_FLIGHT, CAPACITY, SEGMENT_SIZE, Rng, fillPattern, writeLine, type OpDesc } from './common.js';
import { CHILD_OPTIONS, Tear, countFlag, fail, waitForGo } from './tearing.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    seed: { type: 'string' },
    'first-id': { type: 'string' },
    'checkpoint-bytes': { type: 'string' },
    'checkpoint-every': { type: 'string' },
    'checkpoint-at-open': { type: 'boolean' },
    lbas: { type: 'string' },
    'in-flight': { type: 'string' },
    'max-sectors': { type: 'string' },
    ...CHILD_OPTIONS,
  },
  strict: true,
});

function summary(store: Store): Record<string, number> {
  const s = store.stats();
  return {
    commits: s.commits,
    flushes: s.flushes,
    checkpoints: s.checkpoints,
    segmentsCleaned: s.segmentsCleaned,
    freeSegments: s.freeSegments,
    liveBytes: s.liveBytes,
  };
}

/** Written sectors per batch at most: 224 KiB, under the data a commit may carry on this store. */
const MAX_BATCH_SECTORS = 448;

function makeBatch(rng: Rng, id: number, lbas: number, maxSectors: number): { ops: AtomicOp[]; desc: OpDesc[] } {
  const ops: AtomicOp[] = [];
  const desc: OpDesc[] = [];
  const n = rng.int(1, 8);
  let written = 0;
  for (let i = 0; i < n; i++) {
    const trim = rng.next() < 0.12;
    // Written sectors stay under the test store's limit per commit (a 256 KiB segment).
    const sectors = trim ? rng.int(1, 32) : Math.min(rng.int(1, maxSectors), MAX_BATCH_SECTORS - written);
    if (sectors === 0) break;
    if (!trim) written += sectors;
    const range = rng.next() < 0.3 ? Math.min(HOT_RANGE, lbas >> 2) : lbas;
    const lba = rng.int(0, range - sectors);
    if (trim) {
      ops.push({ trim: lba, count: sectors });
      desc.push([lba, sectors, 't']);
    } else {
      ops.push({ write: lba, data: fillPattern(id, lba, sectors) });
      desc.push([lba, sectors, 'w']);
    }
  }
  return { ops, desc };
}

async function main(dir: string): Promise<void> {
  const seed = countFlag('seed', values.seed, 1) >>> 0;
  const firstId = countFlag('first-id', values['first-id'], 1);
  const checkpointBytes = countFlag('checkpoint-bytes', values['checkpoint-bytes'], 0);
  const checkpointEvery = countFlag('checkpoint-every', values['checkpoint-every'], 0);
  const lbas = countFlag('lbas', values.lbas, LBA_RANGE);
  const inFlight = countFlag('in-flight', values['in-flight'], MAX_IN_FLIGHT);
  const maxSectors = countFlag('max-sectors', values['max-sectors'], 16);
  if (firstId < 1) throw new Error('--first-id must be >= 1 (batch id 0 means "no data")');
  if (lbas < 128 || lbas > LBA_RANGE) throw new Error(`--lbas must lie in [128, ${LBA_RANGE}]`);
  if (inFlight < 1) throw new Error('--in-flight must be >= 1');
  if (maxSectors < 1 || maxSectors > HOT_RANGE / 2) throw new Error(`--max-sectors must lie in [1, ${HOT_RANGE / 2}]`);
  writeLine(`SEED ${seed}`);
  const rng = new Rng(seed);

  const tear = await Tear.prepare(values, dir, CAPACITY, seed, true);
  writeLine('OPENING');
  tear.opening();
  const store = await open(dir, {
    capacity: CAPACITY,
    segmentSize: SEGMENT_SIZE,
    ...(checkpointBytes > 0 ? { checkpointIntervalBytes: checkpointBytes } : {}),
    ...(tear.media !== undefined ? { media: tear.media } : {}),
  });
  writeLine(`OPENED ${JSON.stringify({ recovery: store.stats().lastRecovery, stats: summary(store) })}`);

  const checkpoint = (): void => {
    store.checkpoint().then(
      () => writeLine(`STATS ${JSON.stringify(summary(store))}`),
      (error: unknown) => fail('checkpoint', error),
    );
  };

  let nextId = firstId;
  const issue = (): void => {
    const id = nextId++;
    const { ops, desc } = makeBatch(rng, id, lbas, maxSectors);
    // A tenth of the batches expire in an hour, long after the test: their data must survive
    // like any other, through cleaning, checkpoints and recovery of their deadlines.
    const ttl = rng.next() < 0.1 ? 3_600_000 : undefined;
    const json = JSON.stringify(desc);
    writeLine(`ISSUE ${id} ${json}`);
    store.block.atomic(ops, ttl === undefined ? {} : { ttl }).then(
      (version) => {
        writeLine(`ACK ${id} ${version} ${json}`);
        const acks = tear.acked();
        if (checkpointEvery > 0 && acks % checkpointEvery === 0) checkpoint();
        issue();
      },
      (error: unknown) => fail(String(id), error),
    );
  };
  for (let i = 0; i < inFlight; i++) issue();
  if (values['checkpoint-at-open']) checkpoint();
  setInterval(() => writeLine(`STATS ${JSON.stringify(summary(store))}`), 40);
}

if (values.dir !== undefined) {
  const dir = values.dir;
  await waitForGo(values);
  await main(dir).catch((error: unknown) => fail('open', error));
}
