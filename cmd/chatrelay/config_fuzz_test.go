package main

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzLoadConfig feeds the config loader hostile YAML (and an environment
// that gives every variable one fuzzed value). Properties: it never panics;
// a file it cannot read as YAML is refused with an error naming the file;
// anything else it reports as problems, each one line that starts with the
// key it is about ("sinks[1].url: …").
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		minimal,
		minimal + "retry: {max: 5mins, initial: 10}\n",
		"sinks:\n  - {name: crm, type: webhook, url: ${URL}, secret: ${S:-}, timeout: ${T:-10s}}\n",
		"sinks: 5\n",
		"sinks: [1, [2], {3: 4}]\n",
		"retry: x\nlog: [a]\nstore: {nats: {replicas: many}}\n",
		"a: &a [*a, *a]\nb: &b [*a, *a]\nc: [*b, *b]\n",
		"\"key\\nwith: newline\": 1\n\"x: y\": 2\n",
		"sinks:\n  - name: \"${X}\"\n    type: discord\n    thread_name: '{{.X}}'\n    webhook_url: https://discord.com/api/webhooks/1/x\n",
		"signing_secrets: ${A}${B:-c}\nadmin: {listen: '${L:-0.0.0.0:1}'}\n",
		"routes:\n  - match: {min_score: 2, topic: [\"\"]}\n    sinks: [nope, 1]\n",
		"max_body_bytes: -1\nstore: {max_size: 1TB, path: ''}\n",
		"---\n- a\n- b\n",
		"!!binary aGVsbG8=\n",
		"\t: bad indent\n",
	} {
		f.Add([]byte(seed), "")
		f.Add([]byte(seed), "value: with # and\nnewline")
	}
	f.Fuzz(func(t *testing.T, raw []byte, envValue string) {
		noFiles := func(string) ([]byte, error) { return nil, errors.New("no files while fuzzing") }
		cfg, err := parseConfig("fuzz.yaml", raw, func(string) string { return envValue }, noFiles)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("refused without naming the file: %v", err)
			}
			return
		}
		err = cfg.Check()
		if err == nil {
			return
		}
		joined, ok := err.(interface{ Unwrap() []error })
		if !ok {
			t.Fatalf("Check returned one unjoined error: %v", err)
		}
		for _, p := range joined.Unwrap() {
			text, key := p.Error(), keyOf(p)
			if key == "" || !strings.HasPrefix(text, key+": ") || strings.Contains(text, "\n") {
				t.Fatalf("a problem that is not one line starting with its key (%q):\n%s", key, text)
			}
		}
	})
}
