package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Timeout bounds one delivery attempt, the answer included.
const Timeout = 10 * time.Second

// MaxAnswer bounds what is read of a receiver's answer (the rest is
// dropped with the connection).
const MaxAnswer = 4 << 10

// userAgent is sent with every delivery.
const userAgent = "impersonator-notify"

// NewClient returns the HTTP client of deliveries: Timeout per attempt,
// bounded connect, TLS and header waits, and no redirects (a 3xx answer is
// a failed attempt: a signed event is never re-sent somewhere else).
func NewClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: Timeout,
		Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            dialer.DialContext,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           20,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  Timeout,
			MaxResponseHeaderBytes: 16 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Send makes one delivery attempt of m to t, signed with key at the time
// now (webhook-timestamp), and returns the receiver's status. A status
// other than 2xx is an error too. No error names the URL (it may carry a
// credential).
func Send(ctx context.Context, client *http.Client, key []byte, t Target, m Message, now time.Time) (int, error) {
	body := m.Body
	if t.Slack {
		body = m.Slack
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("cannot build the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if !t.Slack {
		ts := now.Unix()
		req.Header.Set(HeaderID, m.ID)
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderSignature, Sign(key, m.ID, ts, body))
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, stripURL(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, MaxAnswer))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, fmt.Errorf("HTTP %d %s", res.StatusCode, http.StatusText(res.StatusCode))
	}
	return res.StatusCode, nil
}

// stripURL drops the URL from a client error ("Post \"https://...\": ...").
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timeout: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

// Answer is one URL's answer to SendTest.
type Answer struct {
	Target Target
	Status int   // the HTTP status, 0 when none came
	Err    error // nil: 2xx
}

// SendTest sends one test message (TestMessage) to every URL of c, one
// after the other, and returns each answer in the order of c.Targets.
func SendTest(ctx context.Context, c Config, client *http.Client, now func() time.Time) []Answer {
	if client == nil {
		client = NewClient()
	}
	if now == nil {
		now = time.Now
	}
	m := TestMessage(now())
	out := make([]Answer, 0, len(c.Targets))
	for _, t := range c.Targets {
		status, err := Send(ctx, client, c.Key, t, m, now())
		out = append(out, Answer{Target: t, Status: status, Err: err})
	}
	return out
}
