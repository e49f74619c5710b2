#!/usr/bin/env node
// The `atomio` command.
//
//   atomio serve [--data DIR] [--nbd HOST:PORT|off] …   the servers (what `npm start` runs)
//   atomio volume create|list|resize|remove …           the NBD volumes of a store
//   atomio snapshot create|list|delete …                named snapshots, exported as VOLUME@NAME
//   atomio check DIR [--json]    verify a store, reading only
//   atomio stats DIR [--json]    open a store and print its statistics
//   atomio tour [--data DIR]     a short demonstration of the block face
//   atomio help | --help | --version
//
// Exit codes (stable, scripts may rely on them): 0 success; 1 an error, or `check` found
// problems; 2 a usage error; 3 `check` found the store in use by another process.

import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isAtomioError } from '../base/errors.js';
import { readSmallFile } from '../media/file.js';
import { checkCommand } from './check.js';
import { EXIT, UsageError, writeErr, writeOut } from './output.js';
import { serve, volumeCommand } from './serve.js';
import { snapshotCommand } from './snapshot.js';
import { statsCommand } from './stats.js';
import { tourCommand } from './tour.js';

const USAGE = `usage: atomio <command> [options]

commands:
  serve [options]       serve the store in ./data (or --data DIR) as memcached on 127.0.0.1:11211
                        and NBD on 127.0.0.1:10809 until SIGINT/SIGTERM; \`atomio serve --help\`
                        lists every option
  volume create NAME --size SIZE [--read-only] | list | resize NAME --size SIZE | remove NAME   [--data DIR]
                        manage the store's NBD volumes (not while a server has it open)
  snapshot create NAME | list | delete NAME   [--data DIR]
                        durable read-only snapshots of the store; served over NBD
                        as VOLUME@NAME (not while a server has the store open)
  check DIR [--json]    verify every checksum and cross-reference of the store in DIR,
                        reading only; exit 0 clean, 1 problems found, 3 store in use
  stats DIR [--json]    open the store in DIR and print its statistics
  tour [--data DIR]     a short tour of the block face on the store in DIR (default ./data);
                        run it twice to see the data survive a restart
  help, --help          print this text
  --version             print atomio's version

exit codes: 0 success, 1 error (or problems found), 2 usage error, 3 store in use
`;

type Options = NonNullable<ParseArgsConfig['options']>;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
      throw new UsageError('no command given');
    case 'help':
    case '--help':
    case '-h':
      writeOut(USAGE);
      return EXIT.ok;
    case '--version':
    case '-v':
    case 'version':
      writeOut(`${await version()}\n`);
      return EXIT.ok;
    case 'serve':
      return serve(rest);
    case 'volume':
      return volumeCommand(rest);
    case 'snapshot':
      return snapshotCommand(rest);
    case 'check': {
      const args = parse(rest, { json: { type: 'boolean' } }, 'DIR');
      return args === undefined ? EXIT.ok : checkCommand(args.positional, args.values.json === true);
    }
    case 'stats': {
      const args = parse(rest, { json: { type: 'boolean' } }, 'DIR');
      return args === undefined ? EXIT.ok : statsCommand(args.positional, args.values.json === true);
    }
    case 'tour': {
      const args = parse(rest, { data: { type: 'string' } }, undefined);
      if (args === undefined) return EXIT.ok;
      const data = args.values.data;
      if (data === '') throw new UsageError('tour: --data needs a directory');
      return tourCommand(typeof data === 'string' ? data : './data');
    }
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

/**
 * Parses a command's arguments: its options plus --help, and exactly one positional when
 * `positional` names it (none otherwise). Returns undefined when --help was asked for.
 */
function parse(
  args: string[],
  options: Options,
  positional: string | undefined,
): { values: Record<string, string | boolean | undefined>; positional: string } | undefined {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.values.help === true) {
    writeOut(USAGE);
    return undefined;
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const given = parsed.positionals;
  if (positional === undefined) {
    if (given.length > 0) throw new UsageError(`unexpected argument '${given[0]}'`);
    return { values, positional: '' };
  }
  if (given.length !== 1 || given[0] === '') {
    throw new UsageError(given.length === 0 ? `missing ${positional}` : `expected one ${positional}, got ${given.length}`);
  }
  return { values, positional: given[0]! };
}

async function version(): Promise<string> {
  // dist/src/cli/main.js → the package root holds package.json.
  const bytes = await readSmallFile(fileURLToPath(new URL('../../../package.json', import.meta.url)));
  const parsed: unknown = bytes === undefined ? undefined : JSON.parse(bytes.toString('utf8'));
  const v = typeof parsed === 'object' && parsed !== null && 'version' in parsed ? parsed.version : undefined;
  return typeof v === 'string' ? v : 'unknown';
}

async function run(): Promise<void> {
  // A reader that goes away (`atomio stats DIR | head`) is not an error: the command still
  // finishes, so that the store is closed and unlocked properly; its output goes nowhere.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_DESTROYED') throw error;
  });
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) {
      writeErr(`atomio: ${error.message}\n${USAGE}`);
      process.exitCode = EXIT.usage;
    } else if (isAtomioError(error)) {
      writeErr(`error ${error.code}: ${error.message}\n`);
      process.exitCode = EXIT.error;
    } else {
      const e = error as Error;
      writeErr(`error: ${e?.message ?? String(error)}\n`);
      if (process.env.ATOMIO_DEBUG) writeErr(`${e?.stack ?? ''}\n`);
      process.exitCode = EXIT.error;
    }
  }
}

await run();
