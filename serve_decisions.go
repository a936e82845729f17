package apikey

// Decisions: the "code" of an error body, and the outcome logged for a request.
const (
	decisionMissingKey  = "missing_key"
	decisionInvalidKey  = "invalid_key"
	decisionExpiredKey  = "expired_key"
	decisionRevokedKey  = "revoked_key"
	decisionForbidden   = "forbidden"
	decisionUnavailable = "unavailable"

	decisionRateLimited   = "rate_limited"
	decisionQuotaExceeded = "quota_exceeded"

	// decisionInvalidRequest refuses a request on a route with tokens
	// that cannot be reserved for: no model allowed, a body unread.
	decisionInvalidRequest = "invalid_request"
)

// Reasons a 403 gives.
const (
	reasonMethod  = "method"
	reasonService = "service"
	reasonIP      = "ip"
	reasonKeyType = "key_type"
	reasonPath    = "path"
	reasonPending = "pending_approval"
	reasonPaused  = "paused"
	reasonModel   = "model"
)

// Reasons of refusals on routes with tokens.
const (
	reasonBody         = "body"
	reasonBodyTooLarge = "body_too_large"
	reasonTokensDaily  = "tokens_daily"
	reasonTokensMinute = "tokens_minute"
	reasonTokensModel  = "tokens_model"
	// reasonInflightBody: the bodies held (max_inflight_body) are full.
	reasonInflightBody = "inflight_body"
)

// Reasons of 429s that are not a key's quota.
const (
	// reasonBurst: the key's burst rate.
	reasonBurst = "burst"
	// reasonFailedAuth: the client's failed authentications (throttled by
	// address or by prefix).
	reasonFailedAuth = "failed_auth"
	// reasonKeyChecksInFlight: too many of the client's key checks wait on
	// a remote key source.
	reasonKeyChecksInFlight = "key_checks_in_flight"
)
