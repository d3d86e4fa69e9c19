package redisurl

import (
	"errors"

	"github.com/redis/go-redis/v9"
)

// NewClient returns the go-redis client rawURL asks for: one node,
// Sentinel (a failover client) or Cluster. Its error never contains the
// URL's password.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	p, err := Parse(rawURL)
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
