package redisurl

import (
	"errors"
	"net/url"

	"github.com/redis/go-redis/v9"
)

// NewClient returns the go-redis client rawURL asks for: one node,
// Sentinel (a failover client) or Cluster. Its error never contains the
// URL's password.
//
// The client never sends a command twice unless the URL asks for it
// (max_retries): go-redis would otherwise send a command or a pipeline
// again when its connection broke or timed out after Redis may have run
// it, and the service's scripts are state changes with their audit events
// (run twice, an event appended twice, a login refused as its own replay).
// The request that lost its connection fails closed (503); the next one
// takes a fresh connection.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	p, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New(Redact(err, rawURL))
	}
	none := func(param string, n *int) { // -1: none, unless the URL sets it
		if !u.Query().Has(param) {
			*n = -1
		}
	}
	switch p.Kind {
	case Sentinel:
		none("max_retries", &p.Sentinel.MaxRetries)
		return redis.NewFailoverClient(p.Sentinel), nil
	case Cluster:
		// The cluster client sends a command again through its redirects
		// too (a network error, like MOVED, is a redirect to it): none
		// either. A MOVED then fails its one request, and the client
		// reloads the slots for the next.
		none("max_retries", &p.Cluster.MaxRetries)
		none("max_redirects", &p.Cluster.MaxRedirects)
		return redis.NewClusterClient(p.Cluster), nil
	}
	if p.Single == nil {
		return nil, errors.New("not a Redis URL")
	}
	none("max_retries", &p.Single.MaxRetries)
	return redis.NewClient(p.Single), nil
}
