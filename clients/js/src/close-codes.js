// What the client does when the connection closes, by close code (protocol v1, "Close codes").
//
//   stop       stay closed: reconnecting would be refused again, or the close was asked for
//   reconnect  reconnect with backoff, re-join rooms and recover what was missed
//   refresh    fetch a new token with getToken(), then reconnect

const POLICY = {
  1000: { action: "stop", meaning: "normal closure" },
  1001: { action: "reconnect", meaning: "server going away" },
  1008: { action: "stop", meaning: "policy violation" },
  1009: { action: "reconnect", meaning: "message too big" },
  1011: { action: "reconnect", meaning: "server error" },
  4001: { action: "stop", meaning: "unauthorized" },
  4003: { action: "stop", meaning: "forbidden" },
  // Coming straight back would only be limited again.
  4008: { action: "reconnect", meaning: "rate limited", minDelayMs: 5_000 },
  4009: { action: "reconnect", meaning: "slow consumer" },
  4010: { action: "refresh", meaning: "token expired" },
};

const LOST = { action: "reconnect", meaning: "connection lost" };

/**
 * The policy for a close `code`. `canRefresh`: a new token can be fetched (getToken was
 * given). `freshTokenRefused`: the token was fetched for this very connection, which closed
 * before it opened; fetching yet another would only loop.
 */
export function closePolicy(code, { canRefresh = false, freshTokenRefused = false } = {}) {
  const policy = { minDelayMs: 0, ...(POLICY[code] ?? LOST) };
  if (code === 4001 && canRefresh && !freshTokenRefused) policy.action = "refresh";
  if (code === 4010 && !canRefresh) policy.action = "stop";
  return policy;
}
