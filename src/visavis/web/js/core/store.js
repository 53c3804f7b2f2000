// One object holds what the views render; views subscribe and re-render on change.

export class Store {
  constructor(initial) {
    this.state = initial;
    this.listeners = new Set();
  }

  get() {
    return this.state;
  }

  set(patch) {
    this.state = { ...this.state, ...(typeof patch === "function" ? patch(this.state) : patch) };
    for (const fn of this.listeners) fn(this.state);
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
