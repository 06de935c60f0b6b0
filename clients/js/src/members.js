// A room's member list, keyed by connection id: replaced by the first page in every `joined`
// reply, completed page by page with `members` requests (a big room's `joined` carries only
// its first page, plus `member_count` and a `members_cursor`), and kept current by `presence`
// events (protocol v1: member = { conn, user, presence }). Pages and events are applied as
// keyed upserts and deletes in the order they arrive, which is the order the server produced
// them in, so the list is right once the last page is in. In a room bigger than the client
// fetches (Room's memberLimit), the list holds the first page, whoever joined or changed since,
// and any pages fetched later; `count` is always the server's.

export class Members {
  #byConn = new Map();
  #list = [];
  #stale = false; // the array is made again when next read, not on every change
  #count = 0;

  /**
   * The members as an array, in the order they were first seen. The same array is returned
   * until the list changes, so it can serve as a snapshot (React's useSyncExternalStore).
   */
  get list() {
    if (this.#stale) {
      this.#list = [...this.#byConn.values()];
      this.#stale = false;
    }
    return this.#list;
  }

  /** How many members the room has, including those on pages not fetched (yet). */
  get count() {
    return Math.max(this.#count, this.#byConn.size);
  }

  /** Starts over from a `joined` reply's first page and count. */
  replace(members, count = members.length) {
    this.#byConn = new Map(members.map((member) => [member.conn, member]));
    this.#count = count;
    this.#changed();
  }

  /** Adds one further page from a `members` reply. */
  addPage(members, count) {
    for (const member of members) this.#byConn.set(member.conn, member);
    if (typeof count === "number") this.#count = count;
    this.#changed();
  }

  /**
   * Applies a presence event: `join` and `update` set the member, `leave` removes it. Applied
   * again (a batch repeating what a `joined` reply showed), the list stays the same; the count
   * is an estimate until the frame's `member_count` sets it (`setCount`).
   */
  apply(event, member) {
    if (event === "leave") {
      this.#byConn.delete(member.conn);
      this.#count = Math.max(0, this.#count - 1);
    } else {
      if (event === "join" && !this.#byConn.has(member.conn)) this.#count++;
      this.#byConn.set(member.conn, member);
    }
    this.#changed();
  }

  /** The server's count (every presence frame carries it): what `count` says from now on. */
  setCount(count) {
    this.#count = count;
  }

  #changed() {
    this.#stale = true;
  }
}
