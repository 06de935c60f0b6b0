// React bindings for the Switchboard JavaScript client.
//
//   <SwitchboardProvider url=...>     one client (one WebSocket) for the whole tree below it
//     useSwitchboard()                → { client, state }
//     useRoom(name, { presence })     → { messages, members, publish, history, status, recovery, room, error }
//     usePresence(room)               → { members, setPresence }
//
// React may run an effect, undo it and run it again without the component having really
// unmounted (StrictMode does this on purpose on every mount; <Activity>, Fast Refresh too).
// So nothing is torn down at once: closing the client and leaving a room are deferred by a
// tick and cancelled when the effect comes right back. Rooms are leased with a count, so
// any number of components can use one room, and the room is left when the last lets go.
//
// Plain ES module, no JSX: no build step.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { CLIENT_CODES, Switchboard, SwitchboardError } from "@switchboard/client";

const SwitchboardContext = createContext(null);
const EMPTY = Object.freeze([]);
const NO_RECOVERY = Object.freeze({ status: null, reason: null, count: 0 });
const DEFAULT_MESSAGE_LIMIT = 1000;

// Deferred teardown: long enough for React to run an effect again after undoing it.
const defer = (fn) => setTimeout(fn, 0);
const cancel = (handle) => clearTimeout(handle);

// Closes of provider-owned clients that are waiting for their tick.
const pendingClose = new WeakMap(); // client -> timer

/**
 * Provides one Switchboard client to the tree below. Either `url` (and `options`, read when
 * the client is created: on mount and when `url` changes), which creates, connects and in
 * the end closes a client of its own, or `client`: an existing one, used as it is (the
 * provider neither connects nor closes it).
 */
export function SwitchboardProvider({ url, options, token, getToken, client: given, children }) {
  // getToken may be a new function on every render: the client calls the latest one.
  const latestGetToken = useRef(getToken);
  useEffect(() => {
    latestGetToken.current = getToken;
  });
  // Created during render but not connected: a render React throws away leaves no socket.
  const owned = useMemo(
    () => {
      if (given) return null;
      const auth = {};
      if (token !== undefined) auth.token = token;
      if (typeof getToken === "function") auth.getToken = () => latestGetToken.current();
      return new Switchboard(url, { ...options, ...auth, autoConnect: false });
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps -- options are read at creation
    [given, url],
  );
  const client = given ?? owned;
  if (!client) throw new TypeError("SwitchboardProvider needs a `url` or a `client`");

  useEffect(() => {
    if (!owned) return undefined;
    const waiting = pendingClose.get(owned);
    if (waiting !== undefined) {
      cancel(waiting); // the same provider came straight back: keep the connection
      pendingClose.delete(owned);
    }
    owned.connect(); // no-op while connecting or open; reconnects a client closed before
    return () => {
      pendingClose.set(
        owned,
        defer(() => {
          pendingClose.delete(owned);
          owned.close();
        }),
      );
    };
  }, [owned]);

  const subscribe = useCallback((onChange) => client.on("state", onChange), [client]);
  const getState = () => client.state;
  const state = useSyncExternalStore(subscribe, getState, getState);
  const value = useMemo(() => ({ client, state }), [client, state]);
  return createElement(SwitchboardContext.Provider, { value }, children);
}

/** The provider's client and its connection state ("connecting" | "open" | "reconnecting" | "closed"). */
export function useSwitchboard() {
  const value = useContext(SwitchboardContext);
  if (value === null) throw new Error("useSwitchboard() and the room hooks must be used inside <SwitchboardProvider>");
  return value;
}

// ---------------------------------------------------------------------------------------
// Room leases: per client, per room name, how many hook instances use the room.

const leases = new WeakMap(); // client -> Map<name, Lease>

const presenceKey = (presence) => (presence === undefined ? undefined : JSON.stringify(presence));

function leasesOf(client) {
  let rooms = leases.get(client);
  if (!rooms) leases.set(client, (rooms = new Map()));
  return rooms;
}

/**
 * Takes a lease on room `name`: joins it if nobody holds one (with `presence`, when given),
 * else shares the room. Returns { room, release }.
 */
function acquireRoom(client, name, presence, auth) {
  const rooms = leasesOf(client);
  let lease = rooms.get(name);
  if (lease && lease.room.state === "closed") {
    // Refused, or the client was closed: start over with a new join.
    if (lease.timer !== null) cancel(lease.timer);
    rooms.delete(name);
    lease = undefined;
  }
  if (!lease) {
    const options = presence === undefined ? {} : { presence };
    if (auth.token != null) options.token = auth.token;
    if (auth.memberLimit !== undefined) options.memberLimit = auth.memberLimit;
    // A room getToken is called before every (re-)join: the latest one given by a hook.
    if (auth.getToken) options.getToken = (room) => lease.auth.getToken(room);
    lease = { room: null, count: 0, timer: null, presence: presenceKey(presence), auth };
    lease.room = client.join(name, options);
    rooms.set(name, lease);
  } else {
    updatePresence(lease, presence);
    if (auth.getToken && lease.auth.getToken) lease.auth = auth;
  }
  if (lease.timer !== null) {
    cancel(lease.timer); // came straight back: no leave, no join
    lease.timer = null;
  }
  lease.count += 1;
  let released = false;
  const held = lease;
  return {
    room: held.room,
    release() {
      if (released) return;
      released = true;
      held.count -= 1;
      if (held.count > 0) return;
      held.timer = defer(() => {
        held.timer = null;
        if (held.count > 0) return;
        if (rooms.get(name) === held) rooms.delete(name);
        held.room.leave();
      });
    },
  };
}

function updatePresence(lease, presence) {
  const key = presenceKey(presence);
  if (key === undefined || key === lease.presence) return Promise.resolve(undefined);
  lease.presence = key;
  return lease.room.setPresence(presence); // a refusal also emits the room's "error"
}

/** Sets my presence in room `name` through its lease (so other hooks do not undo it). */
function setLeasedPresence(client, name, presence) {
  const lease = leases.get(client)?.get(name);
  if (!lease) return Promise.reject(notJoined(name));
  return updatePresence(lease, presence);
}

/** The hook's room, or before its effect ran, the room another component holds a lease on. */
function leasedRoom(client, name, room) {
  return room ?? leases.get(client)?.get(name)?.room ?? null;
}

function notJoined(name) {
  return new SwitchboardError(CLIENT_CODES.CLOSED, `room "${name}" is not in use by a mounted component`);
}

// ---------------------------------------------------------------------------------------
// Hooks.

/** The room's live state, read through useSyncExternalStore. */
function useRoomSnapshot(room, event, read, fallback) {
  const subscribe = useCallback((onChange) => (room ? room.on(event, onChange) : () => {}), [room, event]);
  const get = () => (room ? read(room) : fallback);
  return useSyncExternalStore(subscribe, get, get);
}

/**
 * Holds a lease on room `name` while mounted. Returns { room, messages, recovery, error }, all
 * null or empty until the effect has run. The room's subscriptions are made in the same effect
 * as the lease, so nothing emitted in between is missed.
 */
function useLease(name, presence, { collectMessages, limit, token, getToken, memberLimit }) {
  const { client } = useSwitchboard();
  const latestPresence = useRef(presence);
  const latestGetToken = useRef(getToken);
  useEffect(() => {
    latestPresence.current = presence;
    latestGetToken.current = getToken;
  });
  const [store, setStore] = useState({
    client: null,
    name: null,
    room: null,
    messages: EMPTY,
    recovery: NO_RECOVERY,
    error: null,
  });

  useEffect(() => {
    if (typeof name !== "string") return undefined;
    const auth = {
      token,
      memberLimit,
      getToken: typeof latestGetToken.current === "function" ? (room) => latestGetToken.current(room) : null,
    };
    const { room, release } = acquireRoom(client, name, latestPresence.current, auth);
    setStore((s) =>
      s.client === client && s.name === name && s.room === room
        ? s
        : { client, name, room, messages: EMPTY, recovery: NO_RECOVERY, error: null },
    );
    const update = (change) =>
      setStore((s) => (s.room === room ? { ...s, ...change(s) } : s));
    const offs = [room.on("error", (error) => update(() => ({ error })))];
    if (collectMessages) {
      offs.push(
        room.on("recovered", ({ count }) => update(() => ({ recovery: { status: "recovered", reason: null, count } }))),
        room.on("gap", ({ reason }) => update(() => ({ recovery: { status: "gap", reason, count: 0 } }))),
        room.on("message", (message) =>
          update((s) => {
            const kept = s.messages.length >= limit ? s.messages.slice(s.messages.length - limit + 1) : s.messages;
            return { messages: [...kept, message] };
          }),
        ),
      );
    }
    return () => {
      for (const off of offs) off();
      release();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- the token is read when the room is joined
  }, [client, name, collectMessages, limit]);

  // Presence changes after the join (compared by value: an inline object is fine).
  const key = presenceKey(presence);
  useEffect(() => {
    if (key === undefined || typeof name !== "string" || store.room === null) return;
    setLeasedPresence(client, name, latestPresence.current).catch(() => {}); // refusals: `error`
  }, [client, name, key, store.room]);

  const current = store.client === client && store.name === name ? store : null;
  return {
    client,
    room: current?.room ?? null,
    messages: current?.messages ?? EMPTY,
    recovery: current?.recovery ?? NO_RECOVERY,
    error: current?.error ?? null,
  };
}

/**
 * Joins room `name` while the component is mounted (shared with other components using the
 * same room under the same provider). `presence`: my public state in the room, compared by
 * value; changing it updates it. `limit`: most messages kept (oldest dropped), default 1000.
 *
 * Returns { messages, members, memberCount, publish, history, status, recovery, room, error }:
 * the messages received since the component mounted, in order (after a reconnect, the missed
 * ones too when the server recovered them); the member list and how many members the room has
 * (in a big room the list fills in page by page); publish(data, options) → Promise of the `ok`
 * reply (sent again with its key if the reply was lost in a reconnect); history(options) →
 * Promise of { epoch, offset, messages }; the room's state ("joining" | "joined" | "closed");
 * how the last re-join went: { status: "recovered" | "gap" | null, reason, count }; the SDK
 * Room (null before the first effect); the last error the room reported (a refused join or
 * presence update).
 *
 * `token` / `getToken`: a room token for the join (getToken is called before every
 * (re-)join), for rooms the connection token does not cover; read when the room is joined.
 * `memberLimit`: the SDK's join option (a bigger room lists its first page of members until
 * `room.fetchMembers()`); read when the room is joined.
 */
export function useRoom(name, { presence, limit = DEFAULT_MESSAGE_LIMIT, token, getToken, memberLimit } = {}) {
  const { client, room, messages, recovery, error } = useLease(name, presence, {
    collectMessages: true,
    limit,
    token,
    getToken,
    memberLimit,
  });
  const members = useRoomSnapshot(room, "members", (r) => r.members, EMPTY);
  const memberCount = useRoomSnapshot(room, "members", (r) => r.memberCount, 0);
  const status = useRoomSnapshot(room, "state", (r) => r.state, "joining");
  const publish = useCallback(
    (data, options) => leasedRoom(client, name, room)?.publish(data, options) ?? Promise.reject(notJoined(name)),
    [client, name, room],
  );
  const history = useCallback(
    (options) => leasedRoom(client, name, room)?.history(options) ?? Promise.reject(notJoined(name)),
    [client, name, room],
  );
  return { messages, members, memberCount, publish, history, status, recovery, room, error };
}

/**
 * The member list of a room and a way to set my presence in it. `room` is a room name (the
 * room is joined while the component is mounted, like useRoom, without presence of its own)
 * or a Room (e.g. useRoom's `room`), or null.
 */
export function usePresence(room) {
  const byName = typeof room === "string";
  const lease = useLease(byName ? room : null, undefined, { collectMessages: false, limit: 0 });
  const target = byName ? lease.room : room ?? null;
  const members = useRoomSnapshot(target, "members", (r) => r.members, EMPTY);
  const memberCount = useRoomSnapshot(target, "members", (r) => r.memberCount, 0);
  const { client } = lease;
  const setPresence = useCallback(
    (presence) => {
      if (byName) return setLeasedPresence(client, room, presence);
      if (!target) return Promise.reject(notJoined(String(room)));
      const held = leases.get(client)?.get(target.name);
      return held?.room === target ? updatePresence(held, presence) : target.setPresence(presence);
    },
    [byName, client, room, target],
  );
  return { members, memberCount, setPresence };
}
