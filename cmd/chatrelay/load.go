package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/chatrelay/chatrelay/relay"
)

// LoadConfig reads the config: the file (or, with none, the embedded
// defaults), ${ENV} expansion, CHATRELAY_* overrides, *_file secrets. It
// fails only when the file cannot be read or is not YAML; every other
// problem is kept for Validate, which reports them all together.
func LoadConfig(path string, explicit bool, getenv func(string) string) (*Config, error) {
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		return parseConfig(path, raw, getenv, os.ReadFile)
	case errors.Is(err, os.ErrNotExist) && !explicit:
		return parseConfig("", nil, getenv, os.ReadFile) // embedded defaults
	}
	return nil, fmt.Errorf("--config %s: %w", path, err)
}

// parseConfig is LoadConfig on the file's bytes (source "" and no bytes:
// the embedded defaults); readFile reads the *_file secrets.
func parseConfig(source string, raw []byte, getenv func(string) string, readFile func(string) ([]byte, error)) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix("CHATRELAY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	bindEnv(v, reflect.TypeFor[Config](), "")

	cfg := defaultConfig() // what the file and the environment leave unset
	cfg.Source = source
	var problems []error
	if source != "" {
		expanded, envProblems, err := expandEnv(raw, getenv)
		if err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %w", source, err)
		}
		problems = append(problems, envProblems...)
		var tree map[string]any
		if err := yaml.Unmarshal(expanded, &tree); err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %w", source, err)
		}
		if err := v.ReadConfig(bytes.NewReader(expanded)); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	// The file and the CHATRELAY_* overrides, merged.
	settings := v.AllSettings()
	problems = append(problems, secretFiles(settings, reflect.TypeFor[Config](), "", readFile)...)
	problems = append(problems, decode(settings, cfg, "", func(path, k string) string {
		return unknownKey(reflect.TypeFor[Config](), path, k)
	})...)
	problems = append(problems, decodeSinks(cfg.Sinks, readFile)...)
	cfg.loadProblems = problems
	return cfg, nil
}

// decode decodes settings into out, a pointer to a config struct, and
// returns one problem per key that could not be decoded, each under
// prefix: a value of the wrong type, a bad duration or size, and every key
// out does not have (mapstructure's ErrorUnused finds them; unknown says
// what key k at path probably meant).
func decode(settings map[string]any, out any, prefix string, unknown func(path, k string) string) []error {
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           out,
		WeaklyTypedInput: true, // as viper decodes: "8080" for a number, one value for a list
		ErrorUnused:      true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			templateHook,
			mapstructure.TextUnmarshallerHookFunc(),
			splitHook,
		),
	})
	if err != nil {
		return []error{fmt.Errorf("config: %w", err)} // a bug: out is not a pointer
	}
	if err := d.Decode(settings); err != nil {
		return decodeProblems(err, reflect.TypeOf(out).Elem(), prefix, unknown)
	}
	return nil
}

// templateHook parses a message template (text/template with chatrelay's
// functions, relay.ParseTemplate) where a config wants one.
func templateHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[*template.Template]() || from.Kind() != reflect.String {
		return data, nil
	}
	t, err := relay.ParseTemplate("template", data.(string))
	if err != nil {
		return nil, fmt.Errorf("%v; see text/template and the helper functions in config.example.yaml", err)
	}
	return t, nil
}

// splitHook reads a list from one comma-separated string (as a
// CHATRELAY_SIGNING_SECRETS=a,b override gives it), for a list of any text
// type (strings, relay.Secret).
func splitHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice || to.Elem().Kind() != reflect.String {
		return data, nil
	}
	text := data.(string)
	if text == "" {
		return []string{}, nil
	}
	return strings.Split(text, ","), nil
}

// durationHook reads a duration, naming the value and the way to write it
// when it is not one. A bare number is refused: "timeout: 10" would
// otherwise mean ten nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		text := data.(string)
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			return nil, errors.New(durationProblem(text))
		}
		return d, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("%v is a bare number, not a duration; write %vs", data, data)
	}
	return data, nil
}

// durationUnits maps the unit words people write to Go's.
var durationUnits = map[string]struct {
	unit string
	mult float64
}{
	"ns": {"ns", 1}, "nanosecond": {"ns", 1}, "nanoseconds": {"ns", 1},
	"us": {"us", 1}, "µs": {"us", 1}, "microsecond": {"us", 1}, "microseconds": {"us", 1},
	"ms": {"ms", 1}, "msec": {"ms", 1}, "msecs": {"ms", 1}, "milli": {"ms", 1}, "millis": {"ms", 1},
	"millisecond": {"ms", 1}, "milliseconds": {"ms", 1},
	"s": {"s", 1}, "sec": {"s", 1}, "secs": {"s", 1}, "second": {"s", 1}, "seconds": {"s", 1},
	"m": {"m", 1}, "min": {"m", 1}, "mins": {"m", 1}, "minute": {"m", 1}, "minutes": {"m", 1},
	"h": {"h", 1}, "hr": {"h", 1}, "hrs": {"h", 1}, "hour": {"h", 1}, "hours": {"h", 1},
	"d": {"h", 24}, "day": {"h", 24}, "days": {"h", 24},
	"w": {"h", 168}, "wk": {"h", 168}, "week": {"h", 168}, "weeks": {"h", 168},
}

var durationTerm = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([a-zµ]*)$`)

// durationProblem says that text is not a duration and how to write what
// it most likely means: "5mins" → write 5m, "2 days" → write 48h.
func durationProblem(text string) string {
	msg := fmt.Sprintf("%q is not a duration; ", text)
	t := strings.ToLower(strings.TrimSpace(text))
	if d, err := time.ParseDuration(strings.Join(strings.Fields(t), "")); err == nil && t != "" {
		return msg + "write " + d.String() // "1h 30m", "5M"
	}
	if m := durationTerm.FindStringSubmatch(t); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		if u, ok := durationUnits[m[2]]; ok || m[2] == "" {
			if m[2] == "" {
				u.unit, u.mult = "s", 1
			}
			return msg + "write " + strconv.FormatFloat(n*u.mult, 'f', -1, 64) + u.unit
		}
	}
	return msg + "write it with a unit, like 500ms, 30s, 5m or 24h"
}

// decodeProblems turns the decoder's errors into one problem per key,
// each under prefix. A value is echoed only where it cannot be a secret (a
// number or a word that failed to parse). root is the type decoded into;
// unknown says what an unknown key probably meant.
func decodeProblems(err error, root reflect.Type, prefix string, unknown func(path, k string) string) []error {
	var out []error
	add := func(key, msg string) {
		switch {
		case key == "" && prefix == "":
			key = "config"
		case key == "":
			key = strings.TrimSuffix(prefix, ".")
		default:
			key = prefix + key
		}
		out = append(out, problem{key: key, msg: msg})
	}
	var walk func(error)
	walk = func(e error) {
		if joined, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range joined.Unwrap() {
				walk(x)
			}
			return
		}
		de, ok := e.(*mapstructure.DecodeError)
		if !ok {
			if inner := errors.Unwrap(e); inner != nil {
				walk(inner) // "decoding failed due to the following error(s): %w"
				return
			}
			add("", e.Error())
			return
		}
		inner := de.Unwrap()
		if joined, ok := inner.(interface{ Unwrap() []error }); ok {
			walk(joined.(error))
			return
		}
		name := de.Name()
		if name == root.String() {
			name = "" // mapstructure names the top level by its type
		}
		if keys, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
			// ErrorUnused: the keys the struct at name does not have.
			for k := range strings.SplitSeq(keys, ", ") {
				key := keyName(k)
				if name != "" {
					key = name + "." + key
				}
				add(key, unknown(name, k))
			}
			return
		}
		var ute *mapstructure.UnconvertibleTypeError
		var pe *mapstructure.ParseError
		msg := inner.Error()
		switch {
		case errors.As(inner, &ute):
			msg = fmt.Sprintf("%s where %s goes", kindOf(reflect.TypeOf(ute.Value)), kindOf(ute.Expected.Type()))
		case errors.As(inner, &pe):
			v, _ := relay.Truncate(fmt.Sprint(pe.Value), 40)
			msg = fmt.Sprintf("%q is not %s", v, kindOf(pe.Expected.Type()))
		}
		add(name, msg)
	}
	walk(err)
	return out
}

// kindOf names a type as a config's reader knows it.
func kindOf(t reflect.Type) string {
	if t == nil {
		return "nothing"
	}
	switch t.Kind() {
	case reflect.String:
		return "text"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping of keys"
	case reflect.Pointer:
		return kindOf(t.Elem())
	}
	return t.String()
}

// keyName is a key as written in a message: quoted when it holds anything
// but letters, digits, "_" and "-" (a newline, ": "), so that every problem
// stays one line that starts with its key.
func keyName(k string) string {
	if k != "" && strings.IndexFunc(k, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) < 0 {
		return k
	}
	return strconv.Quote(k)
}

// unknownKey says that the struct of root at path has no key k, and what
// was probably meant.
func unknownKey(root reflect.Type, path, k string) string {
	return "unknown key" + suggest(k, keysOf(typeAt(root, path))) + "; see config.example.yaml for every key"
}

// suggest names the key of keys closest to k, when one is close.
func suggest(k string, keys []string) string {
	best, bestD := "", 3
	for _, f := range keys {
		if d := editDistance(k, f); d < bestD {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// keysOf lists the keys a config struct takes (its mapstructure tags,
// those of squashed structs included).
func keysOf(t reflect.Type) []string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		switch tag := t.Field(i).Tag.Get("mapstructure"); {
		case tag == ",squash":
			keys = append(keys, keysOf(t.Field(i).Type)...)
		case tag != "" && tag != "-" && !strings.HasPrefix(tag, ","):
			keys = append(keys, tag)
		}
	}
	return keys
}

// typeAt is the type of the struct at path in root ("sinks[0].match":
// MatchConfig), or nil.
func typeAt(root reflect.Type, path string) reflect.Type {
	t := root
	for seg := range strings.SplitSeq(path, ".") {
		if seg == "" {
			continue
		}
		name, _, _ := strings.Cut(seg, "[")
		t = fieldType(t, name)
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map) {
			t = t.Elem()
		}
	}
	return t
}

// fieldType is the type of the field of struct t (or of a struct it
// squashes) tagged key, or nil.
func fieldType(t reflect.Type, key string) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		switch tag := t.Field(i).Tag.Get("mapstructure"); {
		case tag == key:
			return t.Field(i).Type
		case tag == ",squash":
			if ft := fieldType(t.Field(i).Type, key); ft != nil {
				return ft
			}
		}
	}
	return nil
}

// secretFiles reads the *_file variant of every secret key: in m, decoded
// later into type t (path is where m stands, for messages), a key
// "<key>_file" whose <key> is a relay.Secret is replaced by <key> holding
// the file's content (trimmed), and one whose <key> is a list of secrets
// adds the file's lines (blank lines and # comments aside). It recurses
// into nested sections and lists of them; a sink's own keys are read by
// decodeSinks, against its type's Config.
func secretFiles(m map[string]any, t reflect.Type, path string, readFile func(string) ([]byte, error)) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var errs []error
	at := func(k string) string {
		if path == "" {
			return keyName(k)
		}
		return path + "." + keyName(k)
	}
	secret, secrets := reflect.TypeFor[relay.Secret](), reflect.TypeFor[[]relay.Secret]()
	for k, v := range m {
		base, ok := strings.CutSuffix(k, "_file")
		ft := fieldType(t, base)
		if !ok || (ft != secret && ft != secrets) {
			continue
		}
		delete(m, k)
		file, _ := v.(string)
		if strings.TrimSpace(file) == "" {
			continue // unset (its default)
		}
		if ft == secret && !isEmpty(m[base]) {
			errs = append(errs, problem{key: at(k), msg: "set together with " + at(base) + "; keep only one"})
			continue
		}
		b, err := readFile(file)
		if err != nil {
			fix := "; point it at a readable file holding the secret"
			if ft == secrets {
				fix = "; point it at a file with one secret per line"
			}
			errs = append(errs, problem{key: at(k), msg: err.Error() + fix})
			continue
		}
		if ft == secret {
			m[base] = strings.TrimSpace(string(b))
			if m[base] == "" {
				// As an unset ${NAME}: an empty secret would quietly mean
				// none (a webhook posted unsigned, an admin API without a
				// token).
				errs = append(errs, problem{key: at(k), msg: file + " is empty; put the secret in it, or remove " +
					keyName(k) + " if this one is to have none"})
			}
			continue
		}
		list, _ := m[base].([]any)
		for _, line := range strings.Split(string(b), "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				list = append(list, s)
			}
		}
		m[base] = list
	}
	for k, v := range m {
		ft := fieldType(t, k)
		if ft == nil {
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			errs = append(errs, secretFiles(v, ft, at(k), readFile)...)
		case []any:
			if ft.Kind() != reflect.Slice {
				continue
			}
			for i, item := range v {
				if im, ok := item.(map[string]any); ok {
					errs = append(errs, secretFiles(im, ft.Elem(), fmt.Sprintf("%s[%d]", at(k), i), readFile)...)
				}
			}
		}
	}
	return errs
}

// isEmpty reports whether a setting is unset or blank.
func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(v) == ""
	}
	return false
}
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
