/**
 * A minimal protobuf encoder: just enough of the wire format to write ONNX models without a
 * generated schema. Fields are written in call order; the caller knows the field numbers.
 *
 * Small values are copied into a growable buffer; payloads of {@link REFERENCE_THRESHOLD_BYTES}
 * or more (tensor data, large nested messages) are kept by reference and copied once, by
 * {@link ProtoWriter.finish}, or never, when the caller streams {@link ProtoWriter.chunks}.
 *
 * @module
 */

/** Payloads at least this many bytes long are referenced instead of copied into the buffer. */
export const REFERENCE_THRESHOLD_BYTES = 4096;

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

const INITIAL_CAPACITY = 64;
/** The buffer stops doubling here; beyond it, filled parts become chunks and a new one starts. */
const MAX_CAPACITY = 1 << 20;

const UINT64_LIMIT = 1n << 64n;
const INT64_MIN = -(1n << 63n);

const utf8 = new TextEncoder();

/** Encodes one protobuf message. Create one writer per (nested) message. */
export class ProtoWriter {
  /** Finished pieces of the message, in order (some are caller-owned payloads). */
  readonly #chunks: Uint8Array[] = [];
  #chunkBytes = 0;
  #buffer = new Uint8Array(INITIAL_CAPACITY);
  #view = new DataView(this.#buffer.buffer);
  /** Start of the bytes in `#buffer` not yet moved to `#chunks`. */
  #pendingStart = 0;
  #position = 0;

  /** Encoded size of the message so far, in bytes. */
  get length(): number {
    return this.#chunkBytes + this.#position - this.#pendingStart;
  }

  /**
   * Writes an int32, int64, uint64, bool or enum field. Negative values take 10 bytes (64-bit
   * two's complement), as protobuf requires for int32 and int64.
   */
  varint(field: number, value: number | bigint | boolean): void {
    this.#tag(field, WIRE_VARINT);
    this.#varint(typeof value === "boolean" ? Number(value) : value);
  }

  /** Writes a `float` field (fixed32, little-endian). */
  float(field: number, value: number): void {
    this.#tag(field, WIRE_FIXED32);
    this.#reserve(4);
    this.#view.setFloat32(this.#position, value, true);
    this.#position += 4;
  }

  /** Writes a `double` field (fixed64, little-endian). */
  double(field: number, value: number): void {
    this.#tag(field, WIRE_FIXED64);
    this.#reserve(8);
    this.#view.setFloat64(this.#position, value, true);
    this.#position += 8;
  }

  /**
   * Writes a `bytes` field. Payloads of {@link REFERENCE_THRESHOLD_BYTES} or more are kept by
   * reference: do not modify them before the message is finished.
   */
  bytes(field: number, data: Uint8Array): void {
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#varint(data.length);
    if (data.length >= REFERENCE_THRESHOLD_BYTES) {
      this.#appendChunk(data);
    } else {
      this.#copy(data);
    }
  }

  /** Writes a `string` field as UTF-8. */
  string(field: number, value: string): void {
    this.bytes(field, utf8.encode(value));
  }

  /** Writes a nested message field. Large messages are taken over by reference, not copied. */
  message(field: number, message: ProtoWriter): void {
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#varint(message.length);
    for (const chunk of message.chunks()) {
      if (chunk.length >= REFERENCE_THRESHOLD_BYTES) {
        this.#appendChunk(chunk);
      } else {
        this.#copy(chunk);
      }
    }
  }

  /** Writes a packed repeated int64 field (nothing when `values` is empty). */
  packedInt64s(field: number, values: readonly (number | bigint)[]): void {
    if (values.length === 0) return;
    const packed = new ProtoWriter();
    for (const value of values) packed.#varint(value);
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#varint(packed.length);
    for (const chunk of packed.chunks()) this.#copy(chunk);
  }

  /** Writes a packed repeated float field (nothing when `values` is empty). */
  packedFloats(field: number, values: readonly number[]): void {
    if (values.length === 0) return;
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#varint(4 * values.length);
    this.#reserve(4 * values.length);
    for (const value of values) {
      this.#view.setFloat32(this.#position, value, true);
      this.#position += 4;
    }
  }

  /** The encoded message as a sequence of byte chunks, for streaming to a file. */
  chunks(): readonly Uint8Array[] {
    this.#flush();
    return this.#chunks;
  }

  /** The encoded message as one newly allocated byte array. */
  finish(): Uint8Array {
    return concatenateChunks(this.chunks());
  }

  #tag(field: number, wireType: number): void {
    if (!Number.isInteger(field) || field < 1 || field >= 2 ** 29) {
      throw new RangeError(`protobuf: invalid field number ${field}`);
    }
    this.#varint(field * 8 + wireType);
  }

  #varint(value: number | bigint): void {
    this.#reserve(10);
    if (typeof value === "number" && value >= 0 && Number.isSafeInteger(value)) {
      while (value >= 0x80) {
        this.#buffer[this.#position++] = (value % 0x80) | 0x80;
        value = Math.floor(value / 0x80);
      }
      this.#buffer[this.#position++] = value;
      return;
    }
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new RangeError(`protobuf: ${value} is not a safe integer; pass a bigint`);
    }
    const big = BigInt(value);
    if (big < INT64_MIN || big >= UINT64_LIMIT) {
      throw new RangeError(`protobuf: ${big} does not fit in 64 bits`);
    }
    let bits = BigInt.asUintN(64, big);
    while (bits >= 0x80n) {
      this.#buffer[this.#position++] = Number(bits & 0x7fn) | 0x80;
      bits >>= 7n;
    }
    this.#buffer[this.#position++] = Number(bits);
  }

  #copy(data: Uint8Array): void {
    this.#reserve(data.length);
    this.#buffer.set(data, this.#position);
    this.#position += data.length;
  }

  #appendChunk(chunk: Uint8Array): void {
    this.#flush();
    this.#chunks.push(chunk);
    this.#chunkBytes += chunk.length;
  }

  /** Moves the pending buffered bytes to the chunk list. */
  #flush(): void {
    if (this.#position > this.#pendingStart) {
      const pending = this.#buffer.subarray(this.#pendingStart, this.#position);
      this.#chunks.push(pending);
      this.#chunkBytes += pending.length;
      this.#pendingStart = this.#position;
    }
  }

  /** Makes room for `bytes` more bytes at `#position`. */
  #reserve(bytes: number): void {
    if (this.#position + bytes <= this.#buffer.length) return;
    const pending = this.#buffer.subarray(this.#pendingStart, this.#position);
    if (this.#buffer.length >= MAX_CAPACITY) {
      this.#flush();
      this.#replaceBuffer(Math.max(MAX_CAPACITY, bytes), new Uint8Array(0));
    } else {
      this.#replaceBuffer(Math.max(2 * this.#buffer.length, pending.length + bytes), pending);
    }
  }

  #replaceBuffer(capacity: number, pending: Uint8Array): void {
    this.#buffer = new Uint8Array(capacity);
    this.#buffer.set(pending);
    this.#view = new DataView(this.#buffer.buffer);
    this.#pendingStart = 0;
    this.#position = pending.length;
  }
}

/** Copies byte chunks, in order, into one newly allocated array. */
export function concatenateChunks(chunks: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
