// Deadlines of writes with a TTL, in a binary min-heap by expiresAt.
//
// An entry names the range and version it was written with; when it comes due, the caller
// unmaps whatever part of that range still holds that version. Entries for data overwritten
// in the meantime simply find nothing to unmap.

export interface Deadline {
  expiresAt: number;
  lba: number;
  count: number;
  version: number;
}

export class ExpiryQueue<T extends { expiresAt: number } = Deadline> {
  private heap: T[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(d: T): void {
    const h = this.heap;
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.expiresAt <= d.expiresAt) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = d;
  }

  /** Next deadline, or undefined. */
  peek(): T | undefined {
    return this.heap[0];
  }

  pop(): T | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      let mv = last.expiresAt;
      if (l < h.length && h[l]!.expiresAt < mv) {
        m = l;
        mv = h[l]!.expiresAt;
      }
      if (r < h.length && h[r]!.expiresAt < mv) m = r;
      if (m === i) break;
      h[i] = h[m]!;
      i = m;
    }
    h[i] = last;
    return top;
  }

  clear(): void {
    this.heap = [];
  }
}
