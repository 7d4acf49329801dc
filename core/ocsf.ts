/**
 * Pure builders of the supervisor's OCSF events (schema 1.3.0, class
 * Network Activity, uid 4001): the session to the gateway and each relay.
 *
 * | event          | activity | severity      | status  |
 * |----------------|----------|---------------|---------|
 * | session open   | Open     | Informational | Success |
 * | session close  | Close    | Informational | Success |
 * | session fail   | Fail     | Low           | Failure |
 * | relay open     | Open     | Informational | Success |
 * | relay close    | Close    | Informational | Success |
 * | relay fail     | Fail     | Low           | Failure |
 *
 * The destination endpoint is always the gateway.
 *
 * @module
 */
import { hostPort } from "./endpoint.ts";

/** OCSF schema version of the events. */
export const OCSF_VERSION = "1.3.0";
/** Network Activity class. */
export const NETWORK_ACTIVITY_CLASS_UID = 4001;
/** Network Activity category. */
export const NETWORK_ACTIVITY_CATEGORY_UID = 4;

/** OCSF Network Activity activity ids. */
export const Activity = { Open: 1, Close: 2, Reset: 3, Fail: 4, Refuse: 5, Traffic: 6 } as const;
/** OCSF severity ids. */
export const Severity = { Informational: 1, Low: 2, Medium: 3, High: 4 } as const;
/** OCSF status ids. */
export const Status = { Success: 1, Failure: 2 } as const;

type ActivityName = keyof typeof Activity;
type SeverityName = keyof typeof Severity;
type StatusName = keyof typeof Status;

/** A host and port; `port` is 0 when the URL named none and its scheme has no default. */
export interface Endpoint {
  hostname: string;
  port: number;
  /** The address dialled, when there was one. */
  ip?: string;
}

/** One OCSF Network Activity event. */
export interface NetworkActivityEvent {
  class_uid: number;
  class_name: "Network Activity";
  category_uid: number;
  category_name: "Network Activity";
  activity_id: number;
  activity_name: ActivityName;
  type_uid: number;
  type_name: string;
  severity_id: number;
  severity: SeverityName;
  status_id?: number;
  status?: StatusName;
  status_detail?: string;
  /** Security control outcome: 1 Allowed, 2 Denied (egress decisions only). */
  action_id?: number;
  action?: "Allowed" | "Denied";
  time: number;
  message: string;
  dst_endpoint: Endpoint;
  metadata: { version: string; product: { name: string; vendor_name: string; version: string } };
  unmapped: Record<string, string | number>;
}

/** What every event of one supervisor shares. */
export interface OcsfContext {
  /** The sandbox the supervisor serves. */
  sandboxId: string;
  /** The gateway endpoint (destination of every event). */
  gateway: Endpoint;
  /** Version of the emitting binary. */
  productVersion: string;
  /** Clock in ms; default `Date.now`. */
  now?: () => number;
}

/**
 * Host and port of an endpoint URL such as `https://gw.example:8443/`:
 * scheme and path are stripped; a missing port is the scheme's default
 * (http 80, https 443) or 0.
 */
export function endpointOf(url: string): Endpoint {
  const match = /^(?:([a-z][a-z0-9+.-]*):\/\/)?(\[[^\]]*\]|[^:/?#]*)(?::(\d+))?/i.exec(url.trim());
  const scheme = match?.[1]?.toLowerCase();
  const hostname = (match?.[2] ?? "").replace(/^\[|\]$/g, "");
  const port = match?.[3]
    ? Number(match[3])
    : scheme === "https"
    ? 443
    : scheme === "http"
    ? 80
    : 0;
  return { hostname, port };
}

interface Shape {
  activity: ActivityName;
  severity: SeverityName;
  status?: StatusName;
  message: string;
  detail?: string;
  unmapped: Record<string, string | number>;
}

function build(ctx: OcsfContext, shape: Shape): NetworkActivityEvent {
  const activityId = Activity[shape.activity];
  const event: NetworkActivityEvent = {
    class_uid: NETWORK_ACTIVITY_CLASS_UID,
    class_name: "Network Activity",
    category_uid: NETWORK_ACTIVITY_CATEGORY_UID,
    category_name: "Network Activity",
    activity_id: activityId,
    activity_name: shape.activity,
    type_uid: NETWORK_ACTIVITY_CLASS_UID * 100 + activityId,
    type_name: `Network Activity: ${shape.activity}`,
    severity_id: Severity[shape.severity],
    severity: shape.severity,
    time: (ctx.now ?? Date.now)(),
    message: shape.message,
    dst_endpoint: { ...ctx.gateway },
    metadata: {
      version: OCSF_VERSION,
      product: {
        name: "openshell-sandbox",
        vendor_name: "openshell-deno",
        version: ctx.productVersion,
      },
    },
    unmapped: { sandbox_id: ctx.sandboxId, ...shape.unmapped },
  };
  if (shape.status) {
    event.status_id = Status[shape.status];
    event.status = shape.status;
  }
  if (shape.detail) event.status_detail = shape.detail;
  return event;
}

/** The gateway accepted the supervisor session. */
export function sessionOpened(
  ctx: OcsfContext,
  info: { sessionId: string; heartbeatSecs: number },
): NetworkActivityEvent {
  return build(ctx, {
    activity: "Open",
    severity: "Informational",
    status: "Success",
    message:
      `supervisor session established session_id=${info.sessionId} heartbeat_secs=${info.heartbeatSecs}`,
    unmapped: { session_id: info.sessionId, heartbeat_secs: info.heartbeatSecs },
  });
}

/** The session ended without an error (e.g. the supervisor is shutting down). */
export function sessionClosed(
  ctx: OcsfContext,
  info: { sessionId: string; reason: string },
): NetworkActivityEvent {
  return build(ctx, {
    activity: "Close",
    severity: "Informational",
    status: "Success",
    message: `supervisor session closed session_id=${info.sessionId}: ${info.reason}`,
    unmapped: { session_id: info.sessionId },
  });
}

/** A connection attempt or a live session failed; the supervisor will retry. */
export function sessionFailed(
  ctx: OcsfContext,
  info: { attempt: number; error: string; retryInMs: number; sessionId?: string },
): NetworkActivityEvent {
  return build(ctx, {
    activity: "Fail",
    severity: "Low",
    status: "Failure",
    message: `supervisor session failed, reconnecting (attempt ${info.attempt}) in ${
      Math.round(info.retryInMs)
    } ms: ${info.error}`,
    detail: info.error,
    unmapped: {
      attempt: info.attempt,
      retry_in_ms: Math.round(info.retryInMs),
      ...(info.sessionId ? { session_id: info.sessionId } : {}),
    },
  });
}

/** A relay to the local sshd socket was opened for a channel. */
export function relayOpened(ctx: OcsfContext, info: { channelId: string }): NetworkActivityEvent {
  return build(ctx, {
    activity: "Open",
    severity: "Informational",
    status: "Success",
    message: `relay opened channel_id=${info.channelId}`,
    unmapped: { channel_id: info.channelId },
  });
}

/**
 * A relay ended cleanly, or was closed on purpose (`reason`: the gateway
 * closed it when its exec or SSH connection ended, or the supervisor while
 * stopping). Either way not a failure.
 */
export function relayClosed(
  ctx: OcsfContext,
  info: { channelId: string; bytesToGateway: number; bytesFromGateway: number; reason?: string },
): NetworkActivityEvent {
  return build(ctx, {
    activity: "Close",
    severity: "Informational",
    status: "Success",
    message: `relay closed channel_id=${info.channelId}${info.reason ? `: ${info.reason}` : ""}`,
    unmapped: {
      channel_id: info.channelId,
      bytes_to_gateway: info.bytesToGateway,
      bytes_from_gateway: info.bytesFromGateway,
    },
  });
}

/** A relay could not be opened or broke. */
export function relayFailed(
  ctx: OcsfContext,
  info: { channelId: string; error: string },
): NetworkActivityEvent {
  return build(ctx, {
    activity: "Fail",
    severity: "Low",
    status: "Failure",
    message: `relay failed channel_id=${info.channelId}: ${info.error}`,
    detail: info.error,
    unmapped: { channel_id: info.channelId },
  });
}

/** One egress proxy decision on a guest's connection. */
export interface EgressDecisionInfo {
  sandboxId: string;
  /** `audit`: allowed by an audit rule where the enforced policy would deny. */
  decision: "allowed" | "denied" | "audit";
  host: string;
  port: number;
  /** The deciding rule ("" or absent when none matched). */
  rule?: string;
  /** Why it was denied or audited. */
  reason?: string;
  /** The address dialled. */
  ip?: string;
  /** How the guest asked: `connect` (CONNECT tunnel) or `http` (forward proxy). */
  via?: "connect" | "http";
}

/** What every event of the egress proxy shares. */
export interface EgressOcsfContext {
  /** Version of the emitting binary. */
  productVersion: string;
  /** Clock in ms; default `Date.now`. */
  now?: () => number;
}

/**
 * The egress proxy decided on a connection: allowed (Open, Informational),
 * audit (Open, Low: allowed where enforcement would deny) or denied
 * (Refuse, Low, Failure); the destination is the host the guest named.
 */
export function egressDecision(
  ctx: EgressOcsfContext,
  info: EgressDecisionInfo,
): NetworkActivityEvent {
  const target = hostPort(info.host, info.port);
  const rule = info.rule ? ` rule=${info.rule}` : "";
  const why = info.reason ? `: ${info.reason}` : "";
  const message = info.decision === "allowed"
    ? `egress allowed ${target}${rule}`
    : info.decision === "audit"
    ? `egress audit ${target}${rule} (allowed by an audit rule${why})`
    : `egress denied ${target}${rule}${why}`;
  const unmapped: Record<string, string | number> = { decision: info.decision };
  if (info.rule) unmapped.policy_name = info.rule;
  if (info.via) unmapped.via = info.via;
  const event = build(
    {
      sandboxId: info.sandboxId,
      gateway: { hostname: info.host, port: info.port },
      productVersion: ctx.productVersion,
      now: ctx.now,
    },
    {
      activity: info.decision === "denied" ? "Refuse" : "Open",
      severity: info.decision === "allowed" ? "Informational" : "Low",
      status: info.decision === "denied" ? "Failure" : "Success",
      message,
      detail: info.reason,
      unmapped,
    },
  );
  if (info.ip) event.dst_endpoint.ip = info.ip;
  event.action_id = info.decision === "denied" ? 2 : 1;
  event.action = info.decision === "denied" ? "Denied" : "Allowed";
  event.metadata.product.name = "openshell-egress";
  return event;
}

/** The readable part of an OCSF event line, as {@link readOcsfLine} finds it. */
export interface OcsfSummary {
  /** The parsed event (any OCSF class: only `class_uid` and `message` are required). */
  event: Record<string, unknown>;
  /** Its one-line message. */
  message: string;
  /** A log level for it: `error` (High and above), `warn` (a Failure or Low/Medium), else `info`. */
  level: "error" | "warn" | "info";
}

/**
 * Reads an OCSF event written as one JSON line (the supervisor's events on
 * its stderr, which a VM's console carries to the gateway): `undefined`
 * unless it is a JSON object with a numeric `class_uid` and a string
 * `message`. The text may come from a hostile guest: nothing in it is
 * trusted beyond being bounded JSON.
 */
export function readOcsfLine(text: string): OcsfSummary | undefined {
  const t = text.trim();
  if (!t.startsWith("{") || !t.includes('"class_uid"')) return undefined;
  let o: unknown;
  try {
    o = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (!o || typeof o !== "object" || Array.isArray(o)) return undefined;
  const event = o as Record<string, unknown>;
  if (typeof event.class_uid !== "number" || typeof event.message !== "string") return undefined;
  const severity = typeof event.severity_id === "number" ? event.severity_id : 0;
  const level = severity >= Severity.High
    ? "error"
    : event.status_id === Status.Failure || severity >= Severity.Low
    ? "warn"
    : "info";
  return { event, message: event.message, level };
}
