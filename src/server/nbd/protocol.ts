// The NBD wire protocol's numbers, as /work/shared/specs/nbd-protocol.md names them, and the
// limits this server holds clients to. Nothing here does I/O.
//
// All integers on the wire are big-endian. Names keep the spec's spelling so that a reader
// can grep the spec for them.

// ---------------------------------------------------------------------------------------
// Magic numbers

/** 'NBDMAGIC': the first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': newstyle magic, sent by the server and in front of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** In front of every fixed-newstyle option reply. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---------------------------------------------------------------------------------------
// Handshake

/** Handshake flags (server, 16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits). Any other bit set: the server must drop the connection. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_PLATFORM = REP_ERR + 4;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---------------------------------------------------------------------------------------
// Transmission

/** Transmission flags (16 bits). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

/** Command flags (16 bits). */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** Structured reply flags and chunk types. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

/** base:allocation flags. */
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

/** Error values of replies. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const BASE_ALLOCATION = 'base:allocation';
/** The id this server gives base:allocation when a client selects it. */
export const BASE_ALLOCATION_ID = 1;

// ---------------------------------------------------------------------------------------
// Message sizes

export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** Zero bytes after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_PADDING_BYTES = 124;

// ---------------------------------------------------------------------------------------
// Limits (each one is named in the report of the connection that hits it)

/** Largest READ or WRITE payload; advertised as the maximum payload size (2^25, the spec's default). */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Strings (export names, queries, messages) may be no longer than this (spec, "Conventions"). */
export const MAX_STRING_BYTES = 4096;
/** Option data we read into memory; a longer known option is skipped unread and answered NBD_REP_ERR_TOO_BIG. */
export const MAX_OPTION_BYTES = 64 * 1024;
/** Option data we skip before calling the client abusive and hanging up. */
export const MAX_OPTION_SKIP_BYTES = 16 * 1024 * 1024;
/** Most queries in one LIST/SET_META_CONTEXT; more are answered NBD_REP_ERR_TOO_BIG. */
export const MAX_META_QUERIES = 256;
/** Most options in one handshake before the client is called abusive (a loop of NBD_OPT_LIST, say). */
export const MAX_OPTIONS_PER_HANDSHAKE = 4096;
/** Most descriptors in one base:allocation chunk (the spec asks for at most 2^20). */
export const MAX_BLOCK_STATUS_DESCRIPTORS = 64 * 1024;
