/**
 * The dashboard link protocol, mirroring `onthefly/protocol.py` and
 * docs/protocol.md. spec/messages/types are pure and shared with the webview;
 * framing/handshake/fingerprint need Node.
 */
export * from './spec';
export * from './messages';
export type * from './types';
export * from './framing';
export * from './handshake';
export * from './fingerprint';
