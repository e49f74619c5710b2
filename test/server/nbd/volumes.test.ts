// Volumes: the table in volumes.json (created with the default volume, kept across opens,
// refused when damaged), names and sizes, slot allocation, and removal trimming the slot so
// that a reused slot reads as zeros.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { open, type Store } from '../../../src/index.js';
import { DEFAULT_VOLUME_BYTES, SLOT_SECTORS, VOLUMES_FILE_NAME, Volumes } from '../../../src/server/volumes.js';
import { code } from '../../helpers/errors.js';
import { withTempDir } from '../../helpers/temp.js';

const MiB = 1024 * 1024;

async function withStore(body: (store: Store, dir: string) => Promise<void>, sectorSize: 512 | 4096 = 512): Promise<void> {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 32 * MiB, segmentSize: MiB, sectorSize });
    try {
      await body(store, dir);
    } finally {
      await store.close();
    }
  });
}

test('the first load creates the default volume (1 TiB unless told) in slot 0, durably in volumes.json', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir);
    assert.deepEqual(v.list().map((x) => x.toJSON()), [{ name: 'default', size: DEFAULT_VOLUME_BYTES, readOnly: false, slot: 0 }]);
    assert.equal(DEFAULT_VOLUME_BYTES, 2 ** 40);
    assert.equal(v.get(''), v.get('default'), 'the empty name is the default volume');
    const table = JSON.parse(await fsp.readFile(path.join(dir, VOLUMES_FILE_NAME), 'utf8'));
    assert.equal(table.volumes[0].name, 'default');
    assert.equal(v.slotCount, 256);
    assert.equal(v.slotBytes, 32 * 2 ** 40, '32 TiB slots with 512-byte sectors');
    assert.deepEqual((await fsp.readdir(dir)).filter((f) => f.includes('.tmp')), [], 'no temp files left');
  });
});

test('defaultSize applies only when the table is created; later loads read the table', async () => {
  await withStore(async (store, dir) => {
    await Volumes.load(store, dir, { defaultSize: 4 * MiB });
    const again = await Volumes.load(store, dir, { defaultSize: 8 * MiB });
    assert.equal(again.get('')!.size, 4 * MiB);
  });
});

test('create, list, get and remove; volumes survive a reopen of the store', async () => {
  await withTempDir(async (dir) => {
    let store = await open(dir, { capacity: 32 * MiB, segmentSize: MiB });
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    const a = await v.create('vm-1.disk_A', { size: 64 * 2 ** 30 });
    const b = await v.create('b', { size: MiB, readOnly: true });
    assert.deepEqual([a.slot, b.slot], [1, 2]);
    assert.equal(a.firstLba, SLOT_SECTORS);
    await v.remove('vm-1.disk_A');
    const c = await v.create('c', { size: 2 * MiB });
    assert.equal(c.slot, 1, 'the lowest free slot is reused');
    await store.close();
    store = await open(dir, { capacity: 32 * MiB });
    try {
      const w = await Volumes.load(store, dir);
      assert.deepEqual(
        w.list().map((x) => [x.name, x.size, x.readOnly, x.slot]),
        [
          ['default', MiB, false, 0],
          ['c', 2 * MiB, false, 1],
          ['b', MiB, true, 2],
        ],
      );
      assert.equal(w.get('vm-1.disk_A'), undefined);
    } finally {
      await store.close();
    }
  });
});

test('bad names and sizes are refused with ERR_ARGUMENT and change nothing', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    const bad: [string, number][] = [
      ['', MiB],
      ['x'.repeat(65), MiB],
      ['a/b', MiB],
      ['a b', MiB],
      ['ünï', MiB],
      ['default', MiB],
      ['ok', 0],
      ['ok', 1000],
      ['ok', -512],
      ['ok', 1.5 * 512],
      ['ok', 2 ** 36 * 512 + 512],
      ['ok', Number.NaN],
    ];
    for (const [name, size] of bad) await assert.rejects(v.create(name, { size }), code('ERR_ARGUMENT', `${name}/${size}`));
    assert.deepEqual(v.list().map((x) => x.name), ['default']);
    await assert.rejects(v.remove('nope'), code('ERR_ARGUMENT'));
    await assert.rejects(Volumes.load(store, path.join(dir, 'sub'), { defaultSize: 100 }), code('ERR_ARGUMENT'));
    assert.ok(await v.create('x'.repeat(64), { size: 2 ** 36 * 512 }), 'the largest name and size are fine');
  });
});

test('a new volume reads as zeros even where an earlier volume in its slot wrote, and remove trims the slot', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    const a = await v.create('a', { size: MiB });
    await store.block.write(a.firstLba + 10, Buffer.alloc(4096, 1));
    await v.remove('a');
    assert.equal(store.block.exists(a.firstLba, SLOT_SECTORS), false, 'remove trimmed the slot');
    // Stale data in a free slot (as a crash between the table write and the trim would leave):
    await store.block.write(a.firstLba + 99, Buffer.alloc(512, 2));
    const b = await v.create('b', { size: MiB });
    assert.equal(b.slot, a.slot);
    assert.equal(store.block.exists(b.firstLba, SLOT_SECTORS), false, 'create trimmed the leftovers');
  });
});

test('concurrent creates get distinct slots; a full table says ERR_LIMIT', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    assert.equal(v.slotCount, 32, '4 KiB sectors: 32 slots of 256 TiB');
    const made = await Promise.all(Array.from({ length: 31 }, (_, i) => v.create(`v${i}`, { size: 4096 })));
    assert.equal(new Set(made.map((m) => m.slot)).size, 31);
    await assert.rejects(v.create('one-too-many', { size: 4096 }), code('ERR_LIMIT'));
    await assert.rejects(v.create('v3', { size: 4096 }), code('ERR_ARGUMENT'), 'taken name');
  }, 4096);
});

test('a volume held open by a server cannot be removed until released', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    const a = await v.create('a', { size: MiB });
    const release = v.acquire(a);
    const again = v.acquire(a);
    await assert.rejects(v.remove('a'), code('ERR_ARGUMENT'));
    release();
    release();
    await assert.rejects(v.remove('a'), code('ERR_ARGUMENT'), 'one holder left');
    again();
    await v.remove('a');
  });
});

test('the default volume can be removed and created again in slot 0', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    await v.remove('default');
    assert.equal(v.get(''), undefined);
    const again = await Volumes.load(store, dir, { defaultSize: 4 * MiB });
    assert.equal(again.get(''), undefined, 'not re-created behind the user\'s back');
    const d = await again.create('default', { size: 2 * MiB });
    assert.equal(d.slot, 0);
  });
});

test('a damaged or foreign volumes.json is refused with ERR_FORMAT', async () => {
  await withStore(async (store, dir) => {
    const file = path.join(dir, VOLUMES_FILE_NAME);
    const good = { format: 1, sectorSize: 512, volumes: [{ name: 'default', size: MiB, readOnly: false, slot: 0 }] };
    const cases: [string, unknown][] = [
      ['not JSON', '{"format": 1,'],
      ['format 2', { ...good, format: 2 }],
      ['wrong sector size', { ...good, sectorSize: 4096 }],
      ['no list', { format: 1, sectorSize: 512 }],
      ['bad name', { ...good, volumes: [{ ...good.volumes[0], name: 'a/b', slot: 3 }] }],
      ['slot out of range', { ...good, volumes: [{ name: 'x', size: MiB, readOnly: false, slot: 256 }] }],
      ['size not a multiple', { ...good, volumes: [{ ...good.volumes[0], size: 1000 }] }],
      ['duplicate slot', { ...good, volumes: [good.volumes[0], { name: 'x', size: MiB, readOnly: false, slot: 1 }, { name: 'y', size: MiB, readOnly: false, slot: 1 }] }],
      ['duplicate name', { ...good, volumes: [{ name: 'x', size: MiB, readOnly: false, slot: 1 }, { name: 'x', size: MiB, readOnly: false, slot: 2 }] }],
      ['non-default in slot 0', { ...good, volumes: [{ name: 'x', size: MiB, readOnly: false, slot: 0 }] }],
      ['readOnly not boolean', { ...good, volumes: [{ ...good.volumes[0], readOnly: 'no' }] }],
    ];
    for (const [what, content] of cases) {
      await fsp.writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
      await assert.rejects(Volumes.load(store, dir), code('ERR_FORMAT', what));
    }
    await fsp.writeFile(file, JSON.stringify(good));
    assert.equal((await Volumes.load(store, dir)).get('')!.size, MiB, 'the good table loads');
  });
});

test('resize: growing reads as zeros past the old end even over stale data, shrinking trims the cut-off part; open volumes and bad sizes are refused', async () => {
  await withStore(async (store, dir) => {
    const v = await Volumes.load(store, dir, { defaultSize: MiB });
    const a = await v.create('a', { size: MiB });
    const sectors = MiB / 512;
    await store.block.write(a.firstLba, Buffer.alloc(4096, 1));
    await store.block.write(a.firstLba + sectors - 8, Buffer.alloc(4096, 2));
    // Stale sectors past the end (as a shrink cut short by a crash would leave):
    await store.block.write(a.firstLba + sectors + 100, Buffer.alloc(512, 3));

    const grown = await v.resize('a', 4 * MiB);
    assert.equal(grown.size, 4 * MiB);
    assert.equal(v.get('a')?.size, 4 * MiB);
    assert.equal(store.block.exists(a.firstLba + sectors, 3 * sectors), false, 'the new part reads as zeros');
    assert.deepEqual(await store.block.read(a.firstLba + sectors - 8, 8), Buffer.alloc(4096, 2), 'the old data stays');

    const shrunk = await v.resize('a', 2048);
    assert.equal(shrunk.size, 2048);
    assert.equal(store.block.exists(a.firstLba + 4, SLOT_SECTORS - 4), false, 'the cut-off part is trimmed');
    assert.deepEqual(await store.block.read(a.firstLba, 4), Buffer.alloc(2048, 1), 'the kept part stays');

    const again = await Volumes.load(store, dir);
    assert.equal(again.get('a')?.size, 2048, 'the new size is durable in the table');

    await assert.rejects(v.resize('a', 1000), code('ERR_ARGUMENT'), 'not a multiple of the sector size');
    await assert.rejects(v.resize('a', 0), code('ERR_ARGUMENT'));
    await assert.rejects(v.resize('a', SLOT_SECTORS * 512 + 512), code('ERR_ARGUMENT'), 'larger than a slot');
    await assert.rejects(v.resize('nope', MiB), code('ERR_ARGUMENT'));
    const release = v.acquire(v.get('a')!);
    await assert.rejects(v.resize('a', MiB), code('ERR_ARGUMENT'), 'a server has it open');
    release();
    assert.equal(v.get('a')?.size, 2048, 'refused resizes changed nothing');
  });
});
