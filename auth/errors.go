package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/blobfs/blobfs/blob"
)

// TokenError reports that no valid token could be had: the token endpoint
// rejected the identity (revoked, wrong federated credential, expired
// assertion) or could not be reached, and the last token has expired.
// It wraps blob.ErrPermission so the FUSE layer answers EACCES. It is not
// sticky: the next attempt (after a short backoff) may succeed.
//
// Reason is a summary of the cause, scrubbed of tokens, assertions and
// secrets; the SDK error itself is not kept because azidentity's messages
// embed whole response bodies.
type TokenError struct {
	Identity Identity
	// Status is the token endpoint's HTTP status, 0 when there was no
	// response (transport error, unreadable token file).
	Status int
	Reason string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("auth: cannot get a storage token for %s: %s", e.Identity.full(), e.Reason)
}

// Unwrap makes errors.Is(err, blob.ErrPermission) (and fs.ErrPermission)
// hold.
func (e *TokenError) Unwrap() error { return blob.ErrPermission }

// secretSet remembers values that must never appear in an error or a log
// line: a client secret for the credential's life, and the most recent
// assertions read from token files and tokens issued (older ones have
// expired and been replaced).
type secretSet struct {
	mu sync.Mutex
	// GUARDED_BY(mu)
	fixed, recent []string
}

const maxRecentSecrets = 8

// addFixed remembers a secret for the credential's whole life.
func (s *secretSet) addFixed(v string) {
	if s == nil || len(v) < 4 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fixed = append(s.fixed, v)
}

// add remembers a rotating secret (an assertion, a token).
func (s *secretSet) add(v string) {
	if s == nil || len(v) < 4 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.recent {
		if x == v {
			return
		}
	}
	s.recent = append(s.recent, v)
	if len(s.recent) > maxRecentSecrets {
		s.recent = s.recent[1:]
	}
}

func (s *secretSet) values() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]string(nil), s.fixed...), s.recent...)
}

var (
	// jwtLike matches anything shaped like a JWS (tokens, assertions):
	// base64url header starting {" , payload, optional signature.
	jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.?[A-Za-z0-9_-]*`)
	// secretParam matches credential-bearing query or form parameters.
	secretParam = regexp.MustCompile(`(?i)\b(sig|client_secret|client_assertion|access_token|refresh_token|code)=[^&\s"']+`)
)

// scrub removes known secrets and anything token-shaped from s.
func scrub(s string, secrets ...string) string {
	for _, v := range secrets {
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, "[REDACTED]")
		}
	}
	s = jwtLike.ReplaceAllString(s, "[REDACTED]")
	return secretParam.ReplaceAllString(s, "$1=[REDACTED]")
}

// maxReason bounds a summary; Entra's descriptions are one sentence plus
// trace ids.
const maxReason = 400

// summarize turns a credential's error into a short, scrubbed reason and
// the token endpoint's status, if it answered. For an HTTP rejection it
// keeps what an operator needs (status, OAuth error, the AADSTS sentence,
// e.g. "AADSTS700213: No matching federated identity record found for
// presented assertion subject ...") and drops the rest of the body.
func summarize(err error, secrets []string) (status int, reason string) {
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		status = afe.RawResponse.StatusCode
		reason = fmt.Sprintf("token endpoint answered HTTP %d", status)
		if body, rerr := runtime.Payload(afe.RawResponse); rerr == nil {
			var e struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
				Message     string `json:"message"`
			}
			if json.Unmarshal(body, &e) == nil {
				if e.Error != "" {
					reason += " " + e.Error
				}
				desc := e.Description
				if desc == "" {
					desc = e.Message
				}
				if d := firstLine(desc); d != "" {
					reason += ": " + d
				}
			}
		}
	} else {
		reason = firstLine(err.Error())
	}
	reason = scrub(reason, secrets...)
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	return status, reason
}

// firstLine keeps the first line of s; Entra puts trace and correlation
// ids, and azidentity the response dump, on the lines after it.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}
