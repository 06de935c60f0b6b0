// Types of the Switchboard JavaScript client (protocol "switchboard.v1").

/** A member of a room: one connection, its user (from the token) and its presence state. */
export interface Member {
  conn: string;
  user: string | null;
  /** What the member's own client says about it (anyone can set anything here). */
  presence: Record<string, unknown>;
  /** What the backend vouches for: the token's `info` claim (or the room token's). */
  info?: Record<string, unknown> | null;
}

/** The sender of a message the backend published through the HTTP API (POST /api/publish). */
export interface ServerSender {
  conn: null;
  user: null;
  presence: Record<string, never>;
  server: true;
}

/**
 * What `room.publish` sends as bytes, in a binary frame: an ArrayBuffer, any typed array or
 * DataView, or a Blob (written structurally, so the declarations need no DOM lib).
 */
export type BinaryData = ArrayBuffer | ArrayBufferView | BlobLike;
/** A Blob (or File): its bytes are read with `arrayBuffer()` before the publish goes out. */
export interface BlobLike {
  readonly size: number;
  readonly type: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** A message published to a room, as delivered to its members. */
export interface Message {
  /**
   * Whatever JSON the publisher sent; for a binary message, its bytes as a Uint8Array (live,
   * recovered or read with `history` alike).
   */
  data: unknown;
  /** The member who published it, or the backend (`server: true`). */
  from: Member | ServerSender;
  /** Per room, strictly increasing within an epoch. */
  offset: number;
  /** Milliseconds since the Unix epoch. */
  ts: number;
}

/** The server's reply to a join (also what `room.ready` resolves with). */
export interface JoinedReply {
  type: "joined";
  id: number;
  room: string;
  epoch: string;
  /** The room's current offset. */
  offset: number;
  /** The first page of members, in join order (all of them in a room of up to a page). */
  members: Member[];
  /** How many members the room has. */
  member_count: number;
  /** Present when there are more members than the first page (see JoinOptions.memberLimit). */
  members_cursor?: string;
  /** Present when the join sent `since`: true when `messages` holds exactly what was missed. */
  recovered?: boolean;
  /** Present when `recovered` is false: why the server could not recover. */
  reason?: GapReason;
  /** The missed messages when recovering, oldest first; `[]` otherwise. */
  messages?: Array<Message & { room?: string }>;
  [field: string]: unknown;
}

/** What a publish resolves with: the server's `ok` reply. */
export interface PublishReply {
  type: "ok";
  id: number;
  /** The message's offset in the room (for a repeated key, the first publish's). */
  offset: number;
  /** True when the server had this key already (a publish sent again): it was not delivered twice. */
  duplicate: boolean;
  /** The publish's key: the one given, or the one the SDK made. */
  key: string;
  [field: string]: unknown;
}

/** Why a re-join could not recover (the server's `reason`; "unknown" if it gave none). */
export type GapReason =
  | "epoch_changed" | "too_old" | "too_many" | "invalid_position" | "unavailable" | "unknown" | (string & {});

/** A room's position: the epoch (one continuous life of its offsets) and an offset in it. */
export interface Position {
  epoch: string;
  offset: number;
}

export interface HistoryOptions {
  /**
   * Without it: the oldest kept messages (with `reverse`, the latest). With it: the messages
   * after `since.offset`, oldest first (with `reverse`, those before it, latest first).
   */
  since?: Position;
  /** At most this many (1 to the server's `history_page_size`, default that, 100). */
  limit?: number;
  /** Latest first. Default false. */
  reverse?: boolean;
  /** Reply timeout, counted from when the request is sent. Default: the client's timeoutMs. */
  timeoutMs?: number;
}

/** One page of a room's history. */
export interface HistoryPage {
  /** The room's current epoch and offset. */
  epoch: string;
  offset: number;
  messages: Message[];
}

export interface ServerInfo {
  name?: string;
  version?: string;
  [field: string]: unknown;
}

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";
export type RoomState = "joining" | "joined" | "closed";

/** Codes of errors raised on the client's side; server errors use the protocol's codes. */
export type ClientErrorCode = "timeout" | "disconnected" | "queue_full" | "closed" | "token_error" | "bad_frame" | "left";
export type ServerErrorCode =
  | "bad_json" | "bad_request" | "unknown_type" | "invalid_room" | "not_joined" | "forbidden"
  | "unauthorized" | "rate_limited" | "too_large" | "too_many_rooms" | "unrecoverable_position" | "unavailable"
  | "internal";

export declare class SwitchboardError extends Error {
  constructor(code: string, message: string);
  /** A ServerErrorCode, a ClientErrorCode, or a code added by a newer server. */
  readonly code: ServerErrorCode | ClientErrorCode | (string & {});
}

export declare const CLIENT_CODES: {
  readonly TIMEOUT: "timeout";
  readonly DISCONNECTED: "disconnected";
  readonly QUEUE_FULL: "queue_full";
  readonly CLOSED: "closed";
  readonly TOKEN: "token_error";
  readonly BAD_FRAME: "bad_frame";
  readonly LEFT: "left";
};

export declare const PROTOCOL: "switchboard.v1";

/** What the client needs of a WebSocket: the browser's, Node 22's, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  /** Set to "arraybuffer" by the client, so binary messages arrive as bytes. */
  binaryType?: string;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Time, for tests: the client waits only through this. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: any): void;
}

export interface SwitchboardOptions {
  /** A connection token (JWT), sent in an `auth` frame, the first frame of each connection. */
  token?: string | null;
  /**
   * Fetches a connection token: before the first connection, ahead of expiry (the refresh on
   * the open connection), after close 4010 (expired), and once after 4001. A rejection is an
   * `error` event with code `token_error`, retried with backoff. null: connect anonymously.
   */
  getToken?: (() => string | null | undefined | Promise<string | null | undefined>) | null;
  /** Where there is no global WebSocket (Node 20): e.g. `WebSocket` from the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect schedule, exponential with full jitter. Default { baseMs: 500, maxMs: 30000, resetAfterMs: 10000 }. */
  backoff?: { baseMs?: number; maxMs?: number; resetAfterMs?: number };
  /** Most publishes waiting per room while it is not joined. Default 1000. */
  queueLimit?: number;
  /** Default reply timeout of requests, and time allowed to open a connection. Default 10000. */
  timeoutMs?: number;
  /** Silence allowed after a heartbeat ping before the connection counts as dead. Default 5000. */
  heartbeatGraceMs?: number;
  /** Connect in the constructor. Default true. */
  autoConnect?: boolean;
  clock?: Clock;
  /** Returns a number in [0, 1): the jitter source. Default Math.random. */
  random?: () => number;
}

export interface OpenEvent {
  conn: string;
  user: string | null;
  heartbeatMs: number;
  server: ServerInfo;
}

export interface DisconnectEvent {
  /** The close code; 1006 also when the client gave up on a silent connection. */
  code: number;
  /** The server's reason, or else what the code means. */
  reason: string;
  /** False when the client stays closed (1000, 1008, 4001, 4003, 4010 without getToken). */
  reconnect: boolean;
}

export interface ReconnectEvent {
  /** 1 for the first retry after things worked. */
  attempt: number;
  delayMs: number;
  /** When the attempt starts, ms since the Unix epoch. */
  at: number;
}

export interface ShutdownEvent {
  reason: string;
  reconnectMs: number;
}

export interface ClientEvents {
  state: ClientState;
  open: OpenEvent;
  disconnect: DisconnectEvent;
  reconnect: ReconnectEvent;
  shutdown: ShutdownEvent;
  error: SwitchboardError;
}

export interface PresenceEvent {
  event: "join" | "leave" | "update";
  member: Member;
}

export interface GapEvent {
  room: string;
  /** Why the server could not recover: "epoch_changed", "too_old", "too_many", "invalid_position", "unavailable". */
  reason: GapReason;
  /** The position the re-join asked to recover from. */
  since: Position;
  /** The room's position now, from which messages go on; a different epoch means its history was lost. */
  epoch: string;
  offset: number;
}

export interface RecoveredEvent {
  room: string;
  /** How many missed messages the re-join brought (emitted as `message` events just before). */
  count: number;
}

export interface RoomEvents {
  state: RoomState;
  joined: JoinedReply;
  message: Message;
  presence: PresenceEvent;
  members: Member[];
  gap: GapEvent;
  recovered: RecoveredEvent;
  error: SwitchboardError;
}

export type Unsubscribe = () => void;

export interface JoinOptions {
  /** This member's public state, e.g. { name: "ada" }: a JSON object. */
  presence?: object;
  /** A room token (a JWT the backend minted for this room and this user), sent with every join. */
  token?: string | null;
  /** Fetches a room token before every (re-)join; a rejection is a room `error` (`token_error`), retried. */
  getToken?: ((room: string) => string | null | undefined | Promise<string | null | undefined>) | null;
  /**
   * A room of up to this many members gets its whole member list by itself (page by page
   * after the join); a bigger one only the first page, the count, and whoever joins or changes
   * later, until `fetchMembers()` is called. Default 1000; Infinity: always every page.
   */
  memberLimit?: number;
}

export interface PublishOptions {
  /** Reply timeout, counted from when the frame is sent. Default: the client's timeoutMs. */
  timeoutMs?: number;
  /** Whether the sender receives its own message too. Server default: true. */
  echo?: boolean;
  /**
   * The idempotency key (1–128 bytes): a repeat with the same key in the room within the
   * server's window is not delivered again. Default: one the SDK makes. Pass your own to retry
   * a publish that failed with `timeout` safely.
   */
  key?: string;
}

export interface Room {
  readonly name: string;
  readonly state: RoomState;
  /** The live member list; the same array until it changes. */
  readonly members: readonly Member[];
  /** How many members the room has (more than `members.length` while pages are missing). */
  readonly memberCount: number;
  /** Whether `members` lists every member of the room (every page is in). */
  readonly membersComplete: boolean;
  /** Fetches the member pages not fetched yet; resolves with the whole list. */
  fetchMembers(): Promise<readonly Member[]>;
  /** Resolves with the first joined reply; rejects if the room is refused, left or closed first. */
  readonly ready: Promise<JoinedReply>;
  on<E extends keyof RoomEvents>(event: E, listener: (payload: RoomEvents[E]) => void): Unsubscribe;
  /**
   * `data` is sent as JSON, with a key; bytes (ArrayBuffer, a typed array, DataView, Blob) go as
   * a binary message, which members receive as a Uint8Array. Waits while the room is not joined;
   * a publish whose `ok` was lost with the connection is sent again (same key) after the re-join.
   */
  publish(data: BinaryData, options?: PublishOptions): Promise<PublishReply>;
  publish(data: unknown, options?: PublishOptions): Promise<PublishReply>;
  /** Reads what the room keeps; rejects with the server's code (`unrecoverable_position`, `unavailable`, `forbidden`…). */
  history(options?: HistoryOptions): Promise<HistoryPage>;
  setPresence(presence: object): Promise<unknown>;
  leave(): Promise<void>;
}

export declare class Switchboard {
  constructor(url: string, options?: SwitchboardOptions);
  readonly state: ClientState;
  /** This connection's id, from `welcome`; null until then. */
  readonly conn: string | null;
  /** The user the server identified, from `welcome` or the `auth` reply. */
  readonly user: string | null;
  on<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): Unsubscribe;
  connect(): void;
  join(room: string, options?: JoinOptions): Room;
  close(): void;
}
