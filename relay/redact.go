package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

var redactSegment = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// CheckRedactPath validates a redaction path: field names joined by dots,
// "*" as the last segment meaning every field (client_ip, lead.email,
// lead.*).
func CheckRedactPath(p string) error {
	if p == "" {
		return errors.New("empty path; write a field like client_ip, lead.email or lead.*")
	}
	segs := strings.Split(p, ".")
	for i, s := range segs {
		if s == "*" && i == len(segs)-1 && i > 0 {
			continue
		}
		if !redactSegment.MatchString(s) {
			return fmt.Errorf("%q is not a field path; write a field like client_ip, lead.email or lead.* (\"*\" only last)", p)
		}
	}
	return nil
}

// Redact returns a copy of ev with the fields named by paths removed, from
// the body (re-encoded, key order kept) and from the parsed view, so that a
// sink never sees them. Paths go through arrays (messages.content applies
// to every message) and into fields sent as JSON-encoded strings. With no
// paths, ev itself is returned.
func Redact(ev *Event, paths []string) (*Event, error) {
	if len(paths) == 0 {
		return ev, nil
	}
	split := make([][]string, len(paths))
	for i, p := range paths {
		split[i] = strings.Split(p, ".")
	}
	body, err := redactValue(ev.Body, split)
	if err != nil {
		return nil, fmt.Errorf("redact: %w", err)
	}
	out, err := DecodeEvent(body)
	if err != nil {
		return nil, fmt.Errorf("redact: %w", err)
	}
	out.ID, out.Topic, out.ReceivedAt = ev.ID, ev.Topic, ev.ReceivedAt
	return out, nil
}

func redactValue(raw json.RawMessage, paths [][]string) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || len(paths) == 0 {
		return raw, nil
	}
	switch trimmed[0] {
	case '{':
		return redactObject(trimmed, paths)
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, err
		}
		var b bytes.Buffer
		b.WriteByte('[')
		for i, it := range items {
			v, err := redactValue(it, paths)
			if err != nil {
				return nil, err
			}
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(v)
		}
		b.WriteByte(']')
		return b.Bytes(), nil
	case '"':
		// A JSON-encoded string holding an object or array (Chat Data
		// sometimes sends lead, answer, messages so).
		inner := unwrapString(trimmed)
		if bytes.Equal(inner, trimmed) {
			return raw, nil
		}
		v, err := redactValue(inner, paths)
		if err != nil {
			return nil, err
		}
		return json.Marshal(string(v))
	}
	return raw, nil
}

func redactObject(raw json.RawMessage, paths [][]string) (json.RawMessage, error) {
	fields, err := objectFields(raw)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for _, f := range fields {
		drop := false
		var tails [][]string
		for _, p := range paths {
			if p[0] != f.key && p[0] != "*" {
				continue
			}
			if len(p) == 1 {
				drop = true
				break
			}
			tails = append(tails, p[1:])
		}
		if drop {
			continue
		}
		v := f.raw
		if len(tails) > 0 {
			if v, err = redactValue(f.raw, tails); err != nil {
				return nil, err
			}
		}
		if n > 0 {
			b.WriteByte(',')
		}
		key, _ := json.Marshal(f.key)
		b.Write(key)
		b.WriteByte(':')
		b.Write(v)
		n++
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
