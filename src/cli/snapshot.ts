// `atomio snapshot create|list|delete`: named snapshots of a store, which `atomio serve`
// exports read-only over NBD as VOLUME@SNAPSHOT.

import path from 'node:path';
import { parseArgs } from 'node:util';
import { AtomioError } from '../base/errors.js';
import { fileExists } from '../media/file.js';
import { DATA_FILE_NAME } from '../store/store.js';
import { EXIT, UsageError, aligned, writeOut } from './output.js';
import { openForCommand } from './serve.js';

export const SNAPSHOT_USAGE = `usage: atomio snapshot <create|list|delete> [options]

  snapshot create NAME [--data DIR]
                       a durable, read-only view of the whole store as it is now;
                       \`atomio serve\` exports it over NBD as VOLUME@NAME for every volume
  snapshot list [--data DIR] [--json]
  snapshot delete NAME [--data DIR]
                       the space only the snapshot held returns

The commands open the store in DIR (default ./data), so they cannot run while
\`atomio serve\` has it open: stop the server first.
`;

export async function snapshotCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw new UsageError(`snapshot: which one: create, list or delete?\n${SNAPSHOT_USAGE}`);
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    writeOut(SNAPSHOT_USAGE);
    return EXIT.ok;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: { data: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(`snapshot ${sub}: ${(error as Error).message}`);
  }
  if (parsed.values.help === true) {
    writeOut(SNAPSHOT_USAGE);
    return EXIT.ok;
  }
  if (sub !== 'create' && sub !== 'list' && sub !== 'delete') throw new UsageError(`snapshot: unknown subcommand '${sub}' (create, list or delete)`);
  const names = parsed.positionals;
  if (sub === 'list' && names.length > 0) throw new UsageError(`snapshot list: unexpected argument '${names[0]}'`);
  if (sub !== 'list' && names.length !== 1) throw new UsageError(`snapshot ${sub}: give one NAME`);
  if (sub !== 'list' && parsed.values.json !== undefined) throw new UsageError(`snapshot ${sub}: --json does not apply`);
  const data = parsed.values.data ?? './data';
  if (data === '') throw new UsageError('--data needs a directory');
  if (!(await fileExists(path.join(data, DATA_FILE_NAME)))) {
    throw new AtomioError('ERR_ARGUMENT', `${path.resolve(data)} holds no atomio store; \`atomio serve --data ${data}\` creates one`, { path: data });
  }
  const store = await openForCommand(data, 'Snapshot commands');
  try {
    if (sub === 'create') {
      const snap = await store.snapshot({ name: names[0]! });
      writeOut(`created snapshot '${snap.name}' at version ${snap.version}\n`);
    } else if (sub === 'delete') {
      await store.deleteSnapshot(names[0]!);
      writeOut(`deleted snapshot '${names[0]!}'\n`);
    } else {
      const list = store.snapshots();
      if (parsed.values.json === true) writeOut(`${JSON.stringify(list, null, 2)}\n`);
      else if (list.length === 0) writeOut('no snapshots\n');
      else writeOut(aligned(list.map((s) => [s.name, `version ${s.version}, taken ${new Date(s.createdAt).toISOString()}`]), ''));
    }
  } finally {
    await store.close();
  }
  return EXIT.ok;
}
