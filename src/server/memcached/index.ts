// The memcached server over the kv face: see server.ts for the entry point, connection.ts
// for pipelining and backpressure, text.ts and meta.ts for the commands, cache.ts for what
// each command does to the store and item.ts for how an item is kept in a kv pool.

export { startMemcachedServer, MEMCACHED_DEFAULT_PORT, DEFAULT_MAX_CONNECTIONS, DEFAULT_POOL, SHUTDOWN_GRACE_MS } from './server.js';
export type { MemcachedServer, MemcachedServerOptions } from './server.js';
export { DEFAULT_MAX_ITEM_BYTES, MAX_KEY_BYTES, MAX_LINE_BYTES, MAX_RETRIEVAL_LINE_BYTES, SERVER_VERSION } from './protocol.js';
export { MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_WRITES, OUTPUT_HIGH_WATER_BYTES } from './connection.js';
export { HEADER_BYTES, MAX_HEADER_BYTES, decodeItem, encodeItem } from './item.js';
