// A WebSocket class with a gate, for tests that hold one client off while others reconnect.
// No imports: the React tests use it with their own `ws`.

/**
 * A subclass of `Base` (e.g. the `ws` package's WebSocket) whose connections go to a path the
 * server answers with 404 while `gate.shut`, so a client keeps failing to reconnect until the
 * test opens the gate. Returns { WebSocket, gate }.
 */
export function gatedWebSocket(Base) {
  const gate = { shut: false };
  class GatedWebSocket extends Base {
    constructor(url, protocols) {
      super(gate.shut ? url.replace(/\/ws$/, "/gate-is-shut") : url, protocols);
    }
  }
  return { WebSocket: GatedWebSocket, gate };
}
