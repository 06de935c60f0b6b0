// A minimal event emitter. `on` returns its own unsubscribe function, so a UI component
// can keep one value to undo what it did when it unmounts.

export class Emitter {
  #listeners = new Map();

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  // A throwing listener must not leave the client half way through a state change, so its
  // error is rethrown on its own (uncaught, visible in the console) after the others ran.
  // Returns whether anyone was listening.
  emit(event, payload) {
    const listeners = [...(this.#listeners.get(event) ?? [])];
    for (const listener of listeners) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    return listeners.length > 0;
  }
}
