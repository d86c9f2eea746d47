/**
 * The small interfaces the host core depends on. The VS Code adapter and the
 * browser mode implement them; tests pass plain objects.
 */

/** Where the core reports what happens; the adapters send it to an output channel or stderr. */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** A logger that drops everything (for tests and benchmarks that do not read logs). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Something that can be undone: an event subscription, a server, a timer. */
export interface Disposable {
  dispose(): void;
}
