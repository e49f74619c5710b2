// The `stats` and `stats settings` lines: memcached's names, with atomio's values where a
// name has a meaning here and memcached's neutral value (0, no) where it does not.

import { ATOMIO_VERSION, SERVER_VERSION } from './protocol.js';
import type { ServerState } from './request.js';

type Lines = [string, string | number][];

function rusage(us: number): string {
  return `${Math.floor(us / 1e6)}.${String(us % 1e6).padStart(6, '0')}`;
}

export function generalStats(s: ServerState): Lines {
  const now = Date.now();
  const cpu = process.cpuUsage();
  const usage = s.cache.usage();
  const c = s.cache.counters;
  return [
    ['pid', process.pid],
    ['uptime', Math.floor((now - s.startedAtMs) / 1000)],
    ['time', Math.floor(now / 1000)],
    ['version', SERVER_VERSION],
    ['atomio_version', ATOMIO_VERSION],
    ['libevent', 'node'],
    ['pointer_size', 64],
    ['rusage_user', rusage(cpu.user)],
    ['rusage_system', rusage(cpu.system)],
    ['max_connections', s.maxConnections],
    ['curr_connections', s.currConnections],
    ['total_connections', s.totalConnections],
    ['rejected_connections', s.rejectedConnections],
    ['connection_structures', s.currConnections],
    ['cmd_get', c.cmd_get!],
    ['cmd_set', c.cmd_set!],
    ['cmd_flush', c.cmd_flush!],
    ['cmd_touch', c.cmd_touch!],
    ['cmd_meta', c.cmd_meta!],
    ['get_hits', c.get_hits!],
    ['get_misses', c.get_misses!],
    ['get_expired', c.get_expired!],
    ['get_flushed', c.get_flushed!],
    ['delete_misses', c.delete_misses!],
    ['delete_hits', c.delete_hits!],
    ['incr_misses', c.incr_misses!],
    ['incr_hits', c.incr_hits!],
    ['decr_misses', c.decr_misses!],
    ['decr_hits', c.decr_hits!],
    ['cas_misses', c.cas_misses!],
    ['cas_hits', c.cas_hits!],
    ['cas_badval', c.cas_badval!],
    ['touch_hits', c.touch_hits!],
    ['touch_misses', c.touch_misses!],
    ['store_too_large', c.store_too_large!],
    ['store_no_memory', c.store_no_memory!],
    ['auth_cmds', 0],
    ['auth_errors', 0],
    ['idle_kicks', s.idleKicks],
    ['bytes_read', s.bytesRead],
    ['bytes_written', s.bytesWritten],
    ['limit_maxbytes', s.capacityBytes],
    ['accepting_conns', s.accepting ? 1 : 0],
    ['threads', 1],
    ['conn_yields', 0],
    ['curr_items', usage.items],
    ['total_items', c.total_items!],
    ['bytes', usage.bytes],
    ['evictions', 0],
    ['reclaimed', 0],
    ['durability', s.durability],
  ];
}

export function settingsStats(s: ServerState): Lines {
  return [
    ['maxbytes', s.capacityBytes],
    ['maxconns', s.maxConnections],
    ['tcpport', s.port],
    ['udpport', 0],
    ['inter', s.host],
    ['verbosity', s.verbosity],
    ['oldest', 0],
    ['evictions', 'off'],
    ['domain_socket', 'NULL'],
    ['umask', 700],
    ['shutdown_command', 'no'],
    ['growth_factor', '1.25'],
    ['chunk_size', 48],
    ['num_threads', 1],
    ['stat_key_prefix', ':'],
    ['detail_enabled', 'no'],
    ['reqs_per_event', 20],
    ['cas_enabled', 'yes'],
    ['tcp_backlog', 511],
    ['auth_enabled_sasl', 'no'],
    ['item_size_max', s.cache.maxItemBytes],
    ['maxconns_fast', 'yes'],
    ['hashpower_init', 0],
    ['slab_reassign', 'no'],
    ['slab_automove', 0],
    ['lru_crawler', 'no'],
    ['idle_time', Math.floor(s.idleTimeoutMs / 1000)],
    ['client_flags_size', 4],
    ['durability', s.durability],
    ['persistent', 'yes'],
  ];
}
