// The shapes that runtime.ts and its browser twin share (declared once, implemented twice).

/** A streaming SHA-256. */
export interface Sha256 {
  /** Adds bytes (a string as UTF-8); returns the hash for chaining. */
  update(data: Uint8Array | string): Sha256;
  /** The digest as 64 lowercase hex digits (ends the hash). */
  hex(): string;
}

/** What a thread started by `startThread` sees of its parent. */
export interface ThreadPort {
  /** Calls `fn` with the next message (once). */
  once(fn: (message: unknown) => void): void;
  /** Sends a message to the parent. */
  post(message: unknown): void;
  /** Ends the thread's side of the channel (the thread exits when its function returns). */
  close(): void;
}

/** A started thread, seen from its parent. */
export interface WorkerThread {
  /** Sends a message to the thread (structured clone: a WebAssembly.Memory is shared, not copied). */
  post(message: unknown): void;
  /** "message": the next message; "error": the next uncaught error's message. */
  once(event: "message" | "error", fn: (value: unknown) => void): void;
  /** Lets the process exit while the thread waits (a no-op in a browser). */
  unref(): void;
  /** Stops the thread at once. */
  terminate(): void;
}

/** Where `serveHttp` listens. */
export interface ServeOptions {
  /** The port (0: any free one). */
  port: number;
  /** The address to listen on, e.g. "127.0.0.1". */
  host: string;
}

/** A running server. */
export interface Server {
  /** The port it listens on (the one asked for, or the one chosen for port 0). */
  port: number;
  /** Stops listening; resolves when the server has stopped. */
  close(): Promise<void>;
}
