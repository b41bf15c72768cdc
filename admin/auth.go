package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// authenticate says who makes r, or false. The bearer token is compared as
// a SHA-256 digest in constant time, so neither its bytes nor its length
// leak through timing.
func (h *handler) authenticate(r *http.Request) (who string, ok bool) {
	if h.cfg.tokenSum != nil {
		if tok, found := bearer(r); found {
			sum := sha256.Sum256([]byte(tok))
			if subtle.ConstantTimeCompare(sum[:], h.cfg.tokenSum[:]) == 1 {
				return "token", true
			}
		}
	}
	if h.cfg.auth != nil {
		if who, ok := h.cfg.auth(r); ok {
			if who == "" {
				who = "unnamed"
			}
			return who, true
		}
	}
	return "", false
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
