// `atomio snapshot create|list|delete`: run as a user would, on a store made by the API.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open } from '../../src/index.js';
import { runCli, withTempDir } from './run.js';

test('snapshot create, list and delete work on a store and refuse bad usage', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 16 * 1024 * 1024 });
    await store.kv().put('k', 'v');
    await store.close();

    const created = await runCli(['snapshot', 'create', 'first', '--data', dir]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /created snapshot 'first' at version \d+/);
    const again = await runCli(['snapshot', 'create', 'first', '--data', dir]);
    assert.equal(again.code, 1, 'a second snapshot of the same name is an error');
    assert.match(again.stderr, /exists/);
    const listed = await runCli(['snapshot', 'list', '--json', '--data', dir]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { name: string }[]).map((s) => s.name), ['first']);
    const deleted = await runCli(['snapshot', 'delete', 'first', '--data', dir]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match((await runCli(['snapshot', 'list', '--data', dir])).stdout, /no snapshots/);
    assert.equal((await runCli(['snapshot', 'delete', 'first', '--data', dir])).code, 1);
    assert.equal((await runCli(['snapshot', 'create', '--data', dir])).code, 2, 'no NAME is a usage error');
    assert.equal((await runCli(['snapshot', 'frobnicate', '--data', dir])).code, 2);
    assert.equal((await runCli(['snapshot', 'list', '--data', `${dir}/nowhere`])).code, 1, 'no store there');
  });
});
