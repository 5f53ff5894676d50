package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"

	"github.com/chatrelay/chatrelay/relay"
)

// newLogger builds the process logger: level and format from the config
// (auto = text on a terminal, JSON otherwise), and a last safety net that
// blanks any configured secret that reaches a log line despite
// relay.Secret: scrub, the scrubber that cleans stored text too.
func newLogger(w io.Writer, level, format string, scrub *relay.Scrubber) *slog.Logger {
	var lvl slog.Level
	switch level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: replaceAttr(secretFilter(scrub))}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// replaceAttr writes durations as Go duration strings ("15s", as the text
// handler and the config do) instead of JSON's integer nanoseconds, then
// applies filter (nil: none).
func replaceAttr(filter func([]string, slog.Attr) slog.Attr) func([]string, slog.Attr) slog.Attr {
	return func(groups []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		if filter != nil {
			a = filter(groups, a)
		}
		return a
	}
}

func secretFilter(scrub *relay.Scrubber) func([]string, slog.Attr) slog.Attr {
	if scrub == nil {
		return nil
	}
	return func(_ []string, a slog.Attr) slog.Attr {
		v := a.Value.Resolve()
		var text string
		switch v.Kind() {
		case slog.KindString:
			text = v.String()
		case slog.KindAny:
			switch x := v.Any().(type) {
			case error:
				text = x.Error()
			case fmt.Stringer:
				text = x.String()
			default:
				return a
			}
		default:
			return a
		}
		if cleaned := scrub.Scrub(text); cleaned != text {
			return slog.String(a.Key, cleaned)
		}
		return a
	}
}

// isTerminal reports whether w is a terminal (a person reads it, not a
// program).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
