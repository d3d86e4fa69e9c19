// Package redisurl parses the REDIS_URL forms impersonator accepts, without
// connecting, so that configuration can validate the URL without depending
// on the store, and the store can build its client from the same parse.
//
// Forms: redis://, rediss:// and unix:// for one node; a URL with a
// master_name parameter for Sentinel (sentinel addresses as the host and
// extra addr parameters); a URL with addr parameters and no master_name for
// Cluster (every addr a seed node).
package redisurl

import (
	"errors"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Kind is the Redis deployment a URL names.
type Kind int

// Kinds of URL.
const (
	Single   Kind = iota // redis://, rediss://, unix://
	Sentinel             // master_name parameter
	Cluster              // addr parameters, no master_name
)

// Parsed is a parsed URL; exactly the options of its Kind are set.
type Parsed struct {
	Kind     Kind
	Single   *redis.Options
	Sentinel *redis.FailoverOptions
	Cluster  *redis.ClusterOptions
}

// Parse parses rawURL. Its error never contains the URL's password.
func Parse(rawURL string) (*Parsed, error) {
	p, err := parse(rawURL)
	if err != nil {
		return nil, errors.New(Redact(err, rawURL))
	}
	return p, nil
}

func parse(rawURL string) (*Parsed, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	// none turns a go-redis retry setting off unless the URL sets it: see
	// NewClient.
	none := func(param string, n *int) {
		if !q.Has(param) {
			*n = -1
		}
	}
	// deadlines makes the request's context deadline bound each command:
	// otherwise go-redis waits out its own read and pool timeouts (12 s
	// measured with Redis frozen) past a route's 3 s, and the caller, not
	// the service, decides when a hung Redis is a 503.
	deadlines := func(on *bool) { *on = true }
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, err
		}
		none("max_retries", &o.MaxRetries)
		deadlines(&o.ContextTimeoutEnabled)
		return &Parsed{Kind: Sentinel, Sentinel: o}, nil
	case q.Has("addr"):
		o, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, err
		}
		// The cluster client sends a command again through its redirects
		// too (a network error, like MOVED, is a redirect to it): none
		// either. A MOVED then fails its one request, and the client
		// reloads the slots for the next.
		none("max_retries", &o.MaxRetries)
		none("max_redirects", &o.MaxRedirects)
		deadlines(&o.ContextTimeoutEnabled)
		return &Parsed{Kind: Cluster, Cluster: o}, nil
	}
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	none("max_retries", &o.MaxRetries)
	deadlines(&o.ContextTimeoutEnabled)
	return &Parsed{Kind: Single, Single: o}, nil
}

// Validate reports whether rawURL is a Redis URL this service can use,
// without connecting; the empty URL (embedded Redis) is valid. Its error
// never contains the URL's password.
func Validate(rawURL string) error {
	if rawURL == "" {
		return nil
	}
	_, err := Parse(rawURL)
	return err
}

// Redact returns err's message with the password of rawURL masked, even
// when rawURL does not parse as a URL. A *url.Error's own copy of the URL is
// dropped altogether, and its details too when the URL has user info.
func Redact(err error, rawURL string) string {
	var uerr *url.Error
	msg := err.Error()
	if errors.As(err, &uerr) {
		msg = "invalid URL: " + uerr.Err.Error()
		if strings.Contains(rawURL, "@") {
			// A malformed URL may split its password anywhere (an
			// unescaped "/" makes part of it the "port"): say less.
			msg = "invalid URL (details withheld: it may hold a password; check for unescaped characters)"
		}
	}
	for _, pw := range passwords(rawURL) {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
		if dec, derr := url.PathUnescape(pw); derr == nil && dec != "" {
			msg = strings.ReplaceAll(msg, dec, "xxxxx")
		}
	}
	return msg
}

// passwords finds the password of scheme://user:password@host... by hand,
// so that a URL that url.Parse refuses is redacted too. A malformed URL may
// carry "/", "?" or "#" inside its password: both readings are returned.
func passwords(rawURL string) []string {
	_, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		rest = rawURL
	}
	var out []string
	for _, authority := range []string{rest[:firstOf(rest, "/?#")], rest} {
		at := strings.LastIndex(authority, "@")
		if at < 0 {
			continue
		}
		if _, pw, ok := strings.Cut(authority[:at], ":"); ok && pw != "" {
			out = append(out, pw)
		}
	}
	return out
}

func firstOf(s, chars string) int {
	if i := strings.IndexAny(s, chars); i >= 0 {
		return i
	}
	return len(s)
}
