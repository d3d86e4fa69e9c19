package redisurl

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"redis://localhost:6379/0", true},
		{"rediss://user:pw@redis.internal:6380", true},
		{"unix:///run/redis.sock", true},
		{"redis://s1:26379?master_name=mymaster&addr=s2:26379", true},
		{"redis://n1:6379?addr=n2:6379&addr=n3:6379", true},
		{"http://localhost:6379", false},
		{"mysql://db", false},
		{"redis://localhost:6379?bogus=1", false},
	} {
		if err := Validate(tc.url); (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestParseKind(t *testing.T) {
	for url, want := range map[string]Kind{
		"redis://localhost:6379/0":                            Single,
		"redis://s1:26379?master_name=mymaster&addr=s2:26379": Sentinel,
		"redis://n1:6379?addr=n2:6379&addr=n3:6379":           Cluster,
	} {
		p, err := Parse(url)
		if err != nil || p.Kind != want || (p.Single != nil) != (want == Single) ||
			(p.Sentinel != nil) != (want == Sentinel) || (p.Cluster != nil) != (want == Cluster) {
			t.Errorf("Parse(%q) = %+v, %v; want kind %d with its options only", url, p, err, want)
		}
	}
}

// TestErrorsRedactPassword: whatever is wrong with the URL, the password is
// not in the message, even when url.Parse itself fails.
func TestErrorsRedactPassword(t *testing.T) {
	for _, url := range []string{
		"redis://:s3cretpw@localhost:6379?bogus=1",
		"redis://user:s3cretpw@localhost:notaport",
		"redis://user:s3cretpw@local host:6379",
		"redis://:s3cret%zzpw@localhost:6379",
		"redis://:s3cret/pw@localhost:6379/x",
		"redis://:s3cret%2Fpw@localhost:6379/notadb",
		"http://:s3cretpw@localhost:6379",
		"redis://:s3cretpw@s1:26379?master_name=m&addr=s2:26379&bogus=1",
		"redis://:s3cretpw@n1:6379?addr=n2:6379&bogus=1",
	} {
		err := Validate(url)
		if err == nil {
			t.Errorf("Validate(%q) = nil, want an error", url)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Validate(%q) = %q: the password leaks", url, err)
		}
	}
}

// TestNoRetriesUnlessAsked: every kind of client sends a command once
// (no retries), unless the URL sets max_retries.
func TestNoRetriesUnlessAsked(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"redis://127.0.0.1:6379/0", -1},
		{"redis://127.0.0.1:6379/0?max_retries=2", 2},
		{"redis://127.0.0.1:26379/0?master_name=m", -1},
		{"redis://127.0.0.1:26379/0?master_name=m&max_retries=2", 2},
		{"redis://127.0.0.1:7000?addr=127.0.0.1:7001", -1},
		{"redis://127.0.0.1:7000?addr=127.0.0.1:7001&max_retries=2", 2},
		{"redis://127.0.0.1:7000?addr=127.0.0.1:7001&max_redirects=2", -1},
	} {
		c, err := NewClient(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		var got int
		switch c := c.(type) {
		case *redis.Client:
			got = c.Options().MaxRetries
		case *redis.ClusterClient:
			got = c.Options().MaxRetries
			if r := c.Options().MaxRedirects; !strings.Contains(tc.url, "max_redirects") && r > 0 {
				t.Errorf("%s: MaxRedirects %d: the cluster client would send a command again", tc.url, r)
			}
		default:
			t.Fatalf("%s: a %T", tc.url, c)
		}
		c.Close()
		// go-redis normalises -1 (none) to 0 in a node client's options.
		if none := tc.want < 0; none && got > 0 || !none && got != tc.want {
			t.Errorf("%s: MaxRetries %d, want %d", tc.url, got, tc.want)
		}
	}
}

// TestDeadlines: every kind of client bounds a command by its request's
// context deadline (go-redis's default is its own read and pool timeouts).
func TestDeadlines(t *testing.T) {
	for _, url := range []string{
		"redis://127.0.0.1:6379/0",
		"redis://127.0.0.1:26379/0?master_name=m",
		"redis://127.0.0.1:7000?addr=127.0.0.1:7001",
	} {
		p, err := Parse(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		var got bool
		switch p.Kind {
		case Single:
			got = p.Single.ContextTimeoutEnabled
		case Sentinel:
			got = p.Sentinel.ContextTimeoutEnabled
		case Cluster:
			got = p.Cluster.ContextTimeoutEnabled
		}
		if !got {
			t.Errorf("%s: ContextTimeoutEnabled off: a hung Redis would hold a request past its route's deadline", url)
		}
	}
}
