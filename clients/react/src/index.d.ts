// Types of the Switchboard React bindings.

import type { ReactElement, ReactNode } from "react";
import type {
  ClientState,
  GapReason,
  HistoryOptions,
  HistoryPage,
  Member,
  Message,
  PublishOptions,
  PublishReply,
  Room,
  RoomState,
  Switchboard,
  SwitchboardError,
  SwitchboardOptions,
} from "@switchboard/client";

export type {
  ClientState,
  GapReason,
  HistoryOptions,
  HistoryPage,
  Member,
  Message,
  PublishOptions,
  PublishReply,
  Room,
  RoomState,
  Switchboard,
  SwitchboardError,
  SwitchboardOptions,
} from "@switchboard/client";

export type SwitchboardProviderProps =
  | {
      /** The server's WebSocket endpoint, e.g. "wss://example.com/ws". */
      url: string;
      /** Client options, read when the client is created (on mount, and when `url` changes). `autoConnect` is ignored. */
      options?: SwitchboardOptions;
      /** A connection token, read when the client is created (prefer getToken: tokens expire). */
      token?: string | null;
      /** Fetches a connection token (before connecting, ahead of expiry, after 4001/4010); the latest one given is called. */
      getToken?: () => string | null | undefined | Promise<string | null | undefined>;
      client?: undefined;
      children?: ReactNode;
    }
  | {
      /** An existing client, used as it is: the provider neither connects nor closes it. */
      client: Switchboard;
      url?: undefined;
      options?: undefined;
      children?: ReactNode;
    };

/** One Switchboard client, and so one WebSocket, for the whole tree below it. */
export declare function SwitchboardProvider(props: SwitchboardProviderProps): ReactElement;

export interface SwitchboardContextValue {
  client: Switchboard;
  state: ClientState;
}

/** The provider's client and its connection state. Throws outside a provider. */
export declare function useSwitchboard(): SwitchboardContextValue;

export interface UseRoomOptions {
  /** My public state in the room, e.g. { name: "ada" }. Compared by value; changing it updates it. */
  presence?: object;
  /** Most messages kept; older ones are dropped. Default 1000. */
  limit?: number;
  /** A room token for the join, read when the room is joined. */
  token?: string | null;
  /** Fetches a room token before every (re-)join. */
  getToken?: (room: string) => string | null | undefined | Promise<string | null | undefined>;
  /** The SDK's join option: a bigger room lists its first page until `room.fetchMembers()`. Default 1000. */
  memberLimit?: number;
}

/** How the room's last re-join went. */
export interface RecoveryState {
  /**
   * "recovered": the missed messages were delivered (they are in `messages`); "gap": the server
   * could not recover them, some may be missing (reload with `history`); null: no re-join yet.
   */
  status: "recovered" | "gap" | null;
  /** With "gap": the server's reason ("epoch_changed", "too_old", "too_many", …); else null. */
  reason: GapReason | null;
  /** With "recovered": how many missed messages came; else 0. */
  count: number;
}

export interface RoomView {
  /** Messages received since the component mounted, in offset order (recovered ones included). */
  messages: readonly Message[];
  /** The room's members, me included. */
  members: readonly Member[];
  /** How many members the room has; in a big room `members` fills in page by page. */
  memberCount: number;
  /** Publishes to the room: resolves with the `ok` reply, rejects with a SwitchboardError. */
  publish(data: unknown, options?: PublishOptions): Promise<PublishReply>;
  /** Reads what the room keeps: `room.history` of the SDK. */
  history(options?: HistoryOptions): Promise<HistoryPage>;
  /** "joining" until joined (and again while reconnecting), "closed" when refused. */
  status: RoomState;
  /** How the last re-join went: recovered, or a gap. */
  recovery: RecoveryState;
  /** The SDK room; null until the component's first effect ran. */
  room: Room | null;
  /** The last error the room reported (a refused join or presence update), else null. */
  error: SwitchboardError | null;
}

/** Joins room `name` while mounted; components using the same room share one join. */
export declare function useRoom(name: string, options?: UseRoomOptions): RoomView;

export interface PresenceView {
  members: readonly Member[];
  /** How many members the room has. */
  memberCount: number;
  /** Replaces my presence state in the room. */
  setPresence(presence: object): Promise<unknown>;
}

/** The members of a room (a name, joined while mounted, or a Room) and a way to set my presence. */
export declare function usePresence(room: string | Room | null | undefined): PresenceView;
