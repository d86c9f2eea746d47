/**
 * What the view remembers across a reload (the host keeps it): the session
 * and run shown, the tab, the x axis. Pure: the store is the host channel.
 */
export interface ViewState {
  session?: string;
  /** The run the user pinned; none while following the trainer. */
  run?: string;
  tab?: string;
  xMode?: 'step' | 'epoch';
}

/** Where the state is kept (the host channel is one). */
export interface StateStore {
  getState<T>(): T | undefined;
  setState<T>(state: T): void;
}

export class ViewPrefs {
  private state: ViewState;

  constructor(private readonly store: StateStore) {
    this.state = { ...(store.getState<ViewState>() ?? {}) };
  }

  get saved(): Readonly<ViewState> {
    return this.state;
  }

  /** Change some of the state and keep it. */
  set(change: Partial<ViewState>): void {
    this.state = { ...this.state, ...change };
    this.store.setState(this.state);
  }
}

export function asXMode(v: string | undefined): 'step' | 'epoch' {
  return v === 'epoch' ? 'epoch' : 'step';
}
