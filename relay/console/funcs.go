package console

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"utc": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" },
	// ago is how long before now t was, short: "42s", "5m", "3h 10m", "2d 4h".
	"ago": func(now, t time.Time) string {
		if d := now.Sub(t); d >= time.Second {
			return short(d) + " ago"
		}
		return "just now"
	},
	"lasting": func(now, t time.Time) string {
		if d := now.Sub(t); d >= time.Second {
			return "for " + short(d)
		}
		return "just now"
	},
	"until":   func(now, t time.Time) string { return short(t.Sub(now)) },
	"seconds": func(s float64) string { return short(time.Duration(s * float64(time.Second))) },
	"score":   func(s float64) string { return strconv.FormatFloat(s, 'f', 2, 64) },
	"num":     number,
	"pct":     func(p float64) string { return strconv.FormatFloat(p, 'f', 0, 64) + "%" },
	"count":   func(f float64) string { return strconv.FormatFloat(math.Round(f), 'f', 0, 64) },
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"add": func(a, b int) int { return a + b },
	"zero": func(t *time.Time) bool {
		return t == nil || t.IsZero()
	},
	"deref": func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	},
}

// short writes a duration for people: the two largest units.
func short(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd %dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// number writes credits: whole numbers without decimals, others with up
// to two.
func number(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'f', 2, 64)
}
