/** The protocol's fingerprint: sha256 of the canonical listing, as `fingerprint()` of `onthefly/protocol/spec.py`. Node only. */
import { createHash } from 'node:crypto';
import { canonicalJson, listing } from './spec';

/** 64 hex digits; docs/protocol.md carries it on its `protocol-hash:` line. */
export function fingerprint(): string {
  return createHash('sha256').update(canonicalJson(listing()), 'utf8').digest('hex');
}
