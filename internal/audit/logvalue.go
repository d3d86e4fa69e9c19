package audit

import "log/slog"

// LogValue logs a checkpoint summary as attributes (checkpoint.seq=…,
// checkpoint.digest=… in text logs, an object in JSON ones), not as a Go
// struct dump; the names are its JSON names.
func (s Summary) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.Int64("seq", s.Seq), slog.String("digest", s.Digest), slog.String("first", s.First),
		slog.String("last", s.Last), slog.Time("time", s.Time), slog.Int("events", s.Events),
	}
	if s.Accepted != "" {
		attrs = append(attrs, slog.String("accepted", s.Accepted))
	}
	return slog.GroupValue(attrs...)
}
