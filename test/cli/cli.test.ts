// The `atomio` command as a user runs it: tour, stats, help, version, and what bad command
// lines do. Every test runs the compiled CLI in a child process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { open } from '../../src/index.js';
import { runCli, transcript, withTempDir } from './run.js';

test('tour runs twice on one store; the second run finds what the first one wrote', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'data');
    const first = await runCli(['tour', '--data', data]);
    assert.equal(first.code, 0, transcript(first));
    assert.match(first.stdout, /first tour on this store/, transcript(first));
    assert.match(first.stdout, /ERR_CONDITION/, 'the failing conditional write is shown');
    const left = /lba 0 now holds version (\d+)/.exec(first.stdout);
    assert.ok(left, transcript(first));
    await fsp.access(path.join(data, 'atomio.data'));

    const second = await runCli(['tour', '--data', data]);
    assert.equal(second.code, 0, transcript(second));
    assert.match(second.stdout, new RegExp(`lba 0 holds version ${left[1]} from a previous run: "atomio tour run #1 at `), transcript(second));
    assert.match(second.stdout, /atomio tour run #2 at /, 'the second run numbers itself from the first');
    assert.equal(second.stderr, '');
  });
});

test('tour without --data keeps its store in ./data (what npm start runs)', async () => {
  await withTempDir(async (dir) => {
    const r = await runCli(['tour'], { cwd: dir });
    assert.equal(r.code, 0, transcript(r));
    assert.ok(r.stdout.includes(path.join(dir, 'data', 'atomio.data')), transcript(r));
    await fsp.access(path.join(dir, 'data', 'atomio.data'));
  });
});

test('stats prints aligned key/value lines, and --json parses', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 8 << 20, segmentSize: 64 << 10 });
    await store.block.write(0, Buffer.alloc(4096, 1));
    await store.close();

    const json = await runCli(['stats', dir, '--json']);
    assert.equal(json.code, 0, transcript(json));
    const stats = JSON.parse(json.stdout) as Record<string, unknown>;
    assert.equal(stats.capacity, 8 << 20);
    assert.equal(stats.segmentBytes, 64 << 10);
    assert.equal(stats.liveBytes, 4096);
    assert.equal(typeof stats.eraseCounts, 'object');

    const text = await runCli(['stats', dir]);
    assert.equal(text.code, 0, transcript(text));
    const lines = text.stdout.trimEnd().split('\n').slice(1);
    const column = lines[0]!.search(/ {2}\S/);
    for (const key of ['capacity', 'liveBytes', 'freeSegments', 'writeAmplification', 'eraseCounts']) {
      const line = lines.find((l) => l.trimStart().startsWith(`${key} `));
      assert.ok(line, `stats shows ${key}\n${transcript(text)}`);
      assert.equal(line.search(/ {2}\S/), column, `values line up in one column:\n${text.stdout}`);
    }
  });
});

test('stats and check refuse a directory that holds no store, and create nothing', async () => {
  await withTempDir(async (dir) => {
    for (const command of ['stats', 'check']) {
      const r = await runCli([command, dir]);
      assert.equal(r.code, 1, transcript(r));
      assert.match(r.stderr, /^error ERR_FORMAT: .*holds no atomio store/, transcript(r));
      assert.deepEqual(await fsp.readdir(dir), [], `${command} left the directory as it was`);
    }
  });
});

test('stats on a store another handle holds fails with ERR_LOCKED', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 8 << 20, segmentSize: 64 << 10 });
    try {
      const r = await runCli(['stats', dir]);
      assert.equal(r.code, 1, transcript(r));
      assert.match(r.stderr, /^error ERR_LOCKED: /, transcript(r));
    } finally {
      await store.close();
    }
  });
});

test('an unknown command or bad arguments print one error line and the usage, exit 2', async () => {
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /^atomio: unknown command 'frobnicate'\n/],
    [[], /^atomio: no command given\n/],
    [['check'], /^atomio: missing DIR\n/],
    [['check', 'a', 'b'], /^atomio: expected one DIR, got 2\n/],
    [['stats', 'a', '--bogus'], /^atomio: Unknown option '--bogus'/],
    [['tour', 'extra'], /^atomio: unexpected argument 'extra'\n/],
    [['tour', '--data'], /^atomio: Option '--data <value>' argument missing/],
  ];
  for (const [args, first] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `atomio ${args.join(' ')}\n${transcript(r)}`);
    assert.match(r.stderr, first, transcript(r));
    assert.match(r.stderr, /\nusage: atomio <command>/, transcript(r));
    assert.equal(r.stdout, '', 'usage errors print nothing on stdout');
  }
});

test('help and --version print to stdout and exit 0', async () => {
  for (const args of [['help'], ['--help'], ['-h'], ['check', '--help']]) {
    const r = await runCli(args);
    assert.equal(r.code, 0, transcript(r));
    assert.match(r.stdout, /^usage: atomio <command>/);
    assert.match(r.stdout, /check DIR/);
    assert.equal(r.stderr, '');
  }
  const pkg = JSON.parse(await fsp.readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  const v = await runCli(['--version']);
  assert.equal(v.code, 0, transcript(v));
  assert.equal(v.stdout, `${pkg.version}\n`);
});
