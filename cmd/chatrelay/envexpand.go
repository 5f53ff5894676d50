package main

import (
	"fmt"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// envRef is a reference to an environment variable: ${NAME}, or
// ${NAME:-default} (the default, possibly empty, when NAME is unset or
// empty).
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// envSlot stands in for one ${NAME} reference while the file is parsed:
// letters and digits only, so it is a valid plain scalar anywhere a
// reference may stand (block, flow, quoted).
var envSlot = regexp.MustCompile(`zzchatrelayenv([0-9]+)zz`)

// expandEnv replaces ${NAME} in the file's values with the environment
// variable's value. A ${NAME} whose variable is unset (or empty) is a
// problem naming the key and the variable: a secret left out must not
// silently become "no secret" (an unsigned webhook). ${NAME:-} allows it
// empty, ${NAME:-default} gives a default. The value goes into the parsed
// document, not the text: a value holding "#", ": ", quotes or a newline
// stays one string, whatever the YAML around the reference. Only the
// braced form is expanded, so a "$" inside a secret stays as written.
func expandEnv(raw []byte, getenv func(string) string) ([]byte, []error, error) {
	if !envRef.Match(raw) {
		return raw, nil, nil
	}
	type ref struct {
		name, def string
		hasDef    bool
	}
	var refs []ref
	slotted := envRef.ReplaceAllFunc(raw, func(m []byte) []byte {
		sub := envRef.FindSubmatch(m)
		r := ref{name: string(sub[1])}
		if len(sub[2]) > 0 {
			r.def, r.hasDef = string(sub[2][2:]), true
		}
		refs = append(refs, r)
		return fmt.Appendf(nil, "zzchatrelayenv%dzz", len(refs)-1)
	})
	var doc yaml.Node
	if err := yaml.Unmarshal(slotted, &doc); err != nil {
		return nil, nil, err
	}
	if doc.Kind == 0 {
		return raw, nil, nil // references only in comments
	}
	var problems []error
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, key)
			}
			return
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := keyName(n.Content[i].Value)
				if key != "" {
					k = key + "." + k
				}
				walk(n.Content[i], key)
				walk(n.Content[i+1], k)
			}
			return
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", key, i))
			}
			return
		case yaml.AliasNode, yaml.ScalarNode:
		}
		if n.Kind != yaml.ScalarNode || !envSlot.MatchString(n.Value) {
			return
		}
		whole := n.Style == 0 && envSlot.FindString(n.Value) == n.Value
		n.Value = envSlot.ReplaceAllStringFunc(n.Value, func(m string) string {
			i, _ := strconv.Atoi(envSlot.FindStringSubmatch(m)[1])
			r := refs[i]
			val := getenv(r.name)
			switch {
			case val != "":
			case r.hasDef:
				val = r.def
			default:
				where := key
				if where == "" {
					where = "config"
				}
				problems = append(problems, problem{key: where, msg: fmt.Sprintf(
					"${%s} is not set; set the environment variable %s, or write ${%s:-} to leave it empty on purpose",
					r.name, r.name, r.name)})
			}
			return val
		})
		if whole && n.Value == "" {
			// "key: ${NAME:-}" is a key without a value, as if the line
			// said "key:": its default applies.
			n.Tag, n.Style, n.Value = "!!null", 0, "null"
			return
		}
		// A string it stays ("${PORT}" was one); a number, duration or
		// boolean in it is read as from any quoted value.
		n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
	}
	walk(&doc, "")
	out, err := yaml.Marshal(&doc)
	return out, problems, err
}
