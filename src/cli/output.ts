// What every command shares: exit codes, the usage error, and plain-text formatting.

export const EXIT = {
  ok: 0,
  /** An error, or `check` found problems. */
  error: 1,
  usage: 2,
  /** `check`: another process holds the store. */
  locked: 3,
} as const;

/** A malformed command line: printed with the usage text, exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function writeOut(text: string): void {
  process.stdout.write(text);
}

export function writeErr(text: string): void {
  process.stderr.write(text);
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} bytes` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Key/value lines with the values aligned in one column. */
export function aligned(rows: readonly (readonly [string, string])[], indent = '  '): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${indent}${k.padEnd(width)}  ${v}\n`).join('');
}

export function range(lba: number, count: number): string {
  return count === 1 ? `${lba}` : `${lba}..${lba + count - 1}`;
}

/** A one-line progress bar redrawn in place; only for a terminal. */
export function progressBar(stream: NodeJS.WriteStream, what: string): { update: (done: number, total: number) => void; clear: () => void } {
  const width = 30;
  let shown = -1;
  return {
    update(done, total) {
      const filled = total === 0 ? width : Math.floor((width * done) / total);
      const percent = total === 0 ? 100 : Math.floor((100 * done) / total);
      if (percent === shown) return;
      shown = percent;
      stream.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(percent).padStart(3)}%  ${done}/${total} ${what}`);
    },
    clear() {
      if (shown >= 0) stream.write('\r\x1b[K');
    },
  };
}
