/**
 * Framing of the link: one message per line of UTF-8 JSON (mirrors
 * `onthefly/link/framing.py`). A line longer than {@link MAX_LINE_BYTES} is
 * never buffered whole: the splitter reports it and the connection is closed.
 * Blank lines are skipped. Node only (Buffer).
 */
import { MAX_LINE_BYTES } from './spec';

export class FrameTooLarge extends Error {
  constructor(readonly bytes: number, readonly limit: number) {
    super(`a line of more than ${limit} bytes (${bytes} so far) is over the limit: the connection is closed; send smaller messages`);
    this.name = 'FrameTooLarge';
  }
}

const NEWLINE = 0x0a;

/** Splits a byte stream into lines, holding at most `maxBytes` plus one chunk. */
export class LineSplitter {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly maxBytes: number = MAX_LINE_BYTES) {}

  /** Bytes of an unfinished line held. */
  get buffered(): number {
    return this.size;
  }

  /**
   * Feed bytes; returns the complete, non-blank lines they finish, as UTF-8 text
   * (invalid sequences decode to U+FFFD and then fail as JSON).
   *
   * @throws FrameTooLarge when a line passes the limit.
   */
  push(data: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = data.indexOf(NEWLINE, start);
      if (nl < 0) break;
      const part = data.subarray(start, nl);
      const total = this.size + part.length;
      if (total > this.maxBytes) throw new FrameTooLarge(total, this.maxBytes);
      const line = this.size ? Buffer.concat([...this.chunks, part], total) : part;
      this.chunks = [];
      this.size = 0;
      const text = line.toString('utf8');
      if (text.trim()) lines.push(text);
      start = nl + 1;
    }
    if (start < data.length) {
      const rest = data.subarray(start);
      this.size += rest.length;
      if (this.size > this.maxBytes) throw new FrameTooLarge(this.size, this.maxBytes);
      this.chunks.push(Buffer.from(rest));
    }
    return lines;
  }
}
