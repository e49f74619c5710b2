// The NBD server over the block face: see server.ts for the entry point, handshake.ts and
// transmission.ts for the two protocol phases, disk.ts for how byte ranges map onto sectors.

export { startNbdServer, isLoopback, NBD_DEFAULT_PORT, MAX_CONNECTIONS, SHUTDOWN_GRACE_MS, HANDSHAKE_TIMEOUT_MS } from './server.js';
export type { NbdServer, NbdServerOptions } from './server.js';
export { MAX_REQUEST_BYTES } from './protocol.js';
export { MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_REQUESTS } from './transmission.js';
export { parsePskFile } from './tls.js';
export type { NbdTlsOptions, NbdTlsMode, NbdPsk } from './tls.js';
