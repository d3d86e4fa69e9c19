package redisurl

import (
	"errors"

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
	p, err := Parse(rawURL) // retries off unless the URL sets them
	if err != nil {
		return nil, err
	}
	switch p.Kind {
	case Sentinel:
		return redis.NewFailoverClient(p.Sentinel), nil
	case Cluster:
		return redis.NewClusterClient(p.Cluster), nil
	}
	if p.Single == nil {
		return nil, errors.New("not a Redis URL")
	}
	return redis.NewClient(p.Single), nil
}
