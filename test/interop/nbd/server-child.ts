// Test-only entry for `atomio serve` and `atomio volume` until src/cli/main.ts routes to them:
//
//   ATOMIO_TEST_CHILD=1 node dist/test/interop/nbd/server-child.js serve --data DIR ...
//   ATOMIO_TEST_CHILD=1 node dist/test/interop/nbd/server-child.js volume list --data DIR
//
// It does nothing without ATOMIO_TEST_CHILD=1, because `node --test dist/test/` runs every
// file under test/ as a test. Errors print and exit as main.ts does (1 error, 2 usage).

import { isAtomioError } from '../../../src/base/errors.js';
import { UsageError } from '../../../src/cli/output.js';
import { serve, volumeCommand } from '../../../src/cli/serve.js';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'serve') return serve(rest);
  if (command === 'volume') return volumeCommand(rest);
  throw new UsageError(`server-child: serve or volume, not ${String(command)}`);
}

if (process.env.ATOMIO_TEST_CHILD === '1') {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`atomio: ${error.message}\n`);
      process.exitCode = 2;
    } else if (isAtomioError(error)) {
      process.stderr.write(`error ${error.code}: ${error.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`error: ${String(error)}\n`);
      process.exitCode = 1;
    }
  }
}
