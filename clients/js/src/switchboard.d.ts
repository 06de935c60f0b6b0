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

/** A message published to a room, as delivered to its members. */
export interface Message {
  /** Whatever JSON the publisher sent. */
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
  /** Present when there are more members than the first page: the SDK fetches the rest. */
  members_cursor?: string;
  /** Present when the join sent `since`. */
  recovered?: boolean;
  messages?: Array<Message & { room?: string }>;
  [field: string]: unknown;
}

/** The server's `ok` reply to a publish. */
export interface PublishReply {
  type: "ok";
  id: number;
  offset: number;
  [field: string]: unknown;
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
  | "unauthorized" | "rate_limited" | "too_large" | "too_many_rooms" | "unavailable" | "internal";

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
  send(data: string): void;
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
  /** The position the re-join asked to recover from. */
  since: { epoch: string; offset: number };
  /** The room's position now; a different epoch means its history was lost. */
  epoch: string;
  offset: number;
}

export interface RoomEvents {
  state: RoomState;
  joined: JoinedReply;
  message: Message;
  presence: PresenceEvent;
  members: Member[];
  gap: GapEvent;
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
}

export interface PublishOptions {
  /** Reply timeout, counted from when the frame is sent. Default: the client's timeoutMs. */
  timeoutMs?: number;
  /** Whether the sender receives its own message too. Server default: true. */
  echo?: boolean;
}

export interface Room {
  readonly name: string;
  readonly state: RoomState;
  /** The live member list; the same array until it changes. */
  readonly members: readonly Member[];
  /** How many members the room has (more than `members.length` while pages are being fetched). */
  readonly memberCount: number;
  /** Resolves with the first joined reply; rejects if the room is refused, left or closed first. */
  readonly ready: Promise<JoinedReply>;
  on<E extends keyof RoomEvents>(event: E, listener: (payload: RoomEvents[E]) => void): Unsubscribe;
  /** `data` is sent as JSON. */
  publish(data: unknown, options?: PublishOptions): Promise<PublishReply>;
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
