// A room's member list, keyed by connection id: replaced by the list in every `joined`
// reply, then kept current by `presence` events (protocol v1: member = { conn, user, presence }).
// Events are applied as keyed upserts and deletes, so applying one twice does no harm.

export class Members {
  #byConn = new Map();
  #list = [];

  /**
   * The members as an array, in the order they were first seen. The same array is returned
   * until the list changes, so it can serve as a snapshot (React's useSyncExternalStore).
   */
  get list() {
    return this.#list;
  }

  replace(members) {
    this.#byConn = new Map(members.map((member) => [member.conn, member]));
    this.#list = [...this.#byConn.values()];
  }

  /** Applies a presence event: `join` and `update` set the member, `leave` removes it. */
  apply(event, member) {
    if (event === "leave") this.#byConn.delete(member.conn);
    else this.#byConn.set(member.conn, member);
    this.#list = [...this.#byConn.values()];
  }
}
