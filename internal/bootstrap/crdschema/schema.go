// Package crdschema validates custom resources against the structural
// OpenAPI v3 schema of their CustomResourceDefinition, the way the
// Kubernetes API server does with strict field validation
// (kubectl apply --validate=strict, the default since 1.27): a field the
// schema does not declare is an error, not silently pruned.
//
// It exists because blobfs renders KubeRay RayCluster and RayJob objects
// and KubeRay's Go API module cannot be imported here; validating against
// the CRDs KubeRay publishes is the next best thing to a cluster.
//
// Covered: type (object, array, string, integer, number, boolean),
// properties, required, items, additionalProperties (schema or boolean),
// enum, anyOf, nullable, format (int32, int64, date-time; other formats
// are accepted as the API server accepts unknown ones),
// x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields,
// x-kubernetes-embedded-resource, x-kubernetes-list-type (set and map
// uniqueness, map keys present), pattern, minLength, maxLength, minimum,
// maximum, minItems, maxItems, and the root metadata (decoded strictly
// into metav1.ObjectMeta, which is what the API server checks it against).
//
// Not covered: x-kubernetes-validations (CEL rules; a schema carrying them
// is accepted and the rules are reported by Rules so callers know what was
// not checked), defaulting, and the API server's own ObjectMeta rules
// beyond decoding (name syntax is the caller's to check).
//
// One deliberate difference: null is refused where the schema is not
// nullable. The API server prunes such nulls instead; a renderer that
// emits them has a bug either way.
package crdschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// ErrInvalid marks a document that does not satisfy its schema.
var ErrInvalid = errors.New("schema violation")

// Schema is the subset of JSONSchemaProps a structural CRD schema uses.
// Unknown keywords make LoadCRD fail, so a CRD using something this
// package does not understand is noticed instead of half-checked.
type Schema struct {
	Description          string             `json:"description,omitempty"`
	Type                 string             `json:"type,omitempty"`
	Format               string             `json:"format,omitempty"`
	Title                string             `json:"title,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	Required             []string           `json:"required,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	AdditionalProperties *SchemaOrBool      `json:"additionalProperties,omitempty"`
	Enum                 []json.RawMessage  `json:"enum,omitempty"`
	AnyOf                []*Schema          `json:"anyOf,omitempty"`
	Default              json.RawMessage    `json:"default,omitempty"`
	Nullable             bool               `json:"nullable,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	MinLength            *int64             `json:"minLength,omitempty"`
	MaxLength            *int64             `json:"maxLength,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
	ExclusiveMinimum     bool               `json:"exclusiveMinimum,omitempty"`
	ExclusiveMaximum     bool               `json:"exclusiveMaximum,omitempty"`
	MinItems             *int64             `json:"minItems,omitempty"`
	MaxItems             *int64             `json:"maxItems,omitempty"`
	MinProperties        *int64             `json:"minProperties,omitempty"`
	MaxProperties        *int64             `json:"maxProperties,omitempty"`

	IntOrString           bool             `json:"x-kubernetes-int-or-string,omitempty"`
	PreserveUnknownFields bool             `json:"x-kubernetes-preserve-unknown-fields,omitempty"`
	EmbeddedResource      bool             `json:"x-kubernetes-embedded-resource,omitempty"`
	ListType              string           `json:"x-kubernetes-list-type,omitempty"`
	ListMapKeys           []string         `json:"x-kubernetes-list-map-keys,omitempty"`
	MapType               string           `json:"x-kubernetes-map-type,omitempty"`
	Validations           []ValidationRule `json:"x-kubernetes-validations,omitempty"`
	ExternalDocs          *json.RawMessage `json:"externalDocs,omitempty"`
	Example               *json.RawMessage `json:"example,omitempty"`
	pattern               *regexp.Regexp   // compiled Pattern
	enumValues            []any            // decoded Enum
}

// ValidationRule is a CEL rule (x-kubernetes-validations). crdschema does
// not evaluate it.
type ValidationRule struct {
	Rule              string `json:"rule"`
	Message           string `json:"message,omitempty"`
	MessageExpression string `json:"messageExpression,omitempty"`
	Reason            string `json:"reason,omitempty"`
	FieldPath         string `json:"fieldPath,omitempty"`
	OptionalOldSelf   *bool  `json:"optionalOldSelf,omitempty"`
}

// SchemaOrBool is additionalProperties: a schema, or true/false.
type SchemaOrBool struct {
	Allows bool
	Schema *Schema
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *SchemaOrBool) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("true")) || bytes.Equal(bytes.TrimSpace(b), []byte("false")) {
		s.Allows = bytes.Equal(bytes.TrimSpace(b), []byte("true"))
		return nil
	}
	s.Allows = true
	s.Schema = new(Schema)
	return strictJSON(b, s.Schema)
}

// CRD is one served version's schema of a CustomResourceDefinition.
type CRD struct {
	Group   string
	Kind    string
	Version string
	Schema  *Schema
}

// APIVersion returns group/version.
func (c *CRD) APIVersion() string { return c.Group + "/" + c.Version }

// crdDoc is the part of a CustomResourceDefinition LoadCRD reads.
type crdDoc struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name    string `json:"name"`
			Served  bool   `json:"served"`
			Storage bool   `json:"storage"`
			Schema  struct {
				OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// LoadCRD parses a CustomResourceDefinition (YAML or JSON) and returns the
// schema of the served version named version. Unknown schema keywords are
// an error.
func LoadCRD(data []byte, version string) (*CRD, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("crdschema: CRD is not YAML: %w", err)
	}
	var doc crdDoc
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("crdschema: CRD: %w", err)
	}
	if doc.Kind != "CustomResourceDefinition" || !strings.HasPrefix(doc.APIVersion, "apiextensions.k8s.io/") {
		return nil, fmt.Errorf("crdschema: not a CustomResourceDefinition (apiVersion %q, kind %q)", doc.APIVersion, doc.Kind)
	}
	for _, v := range doc.Spec.Versions {
		if v.Name != version {
			continue
		}
		if !v.Served {
			return nil, fmt.Errorf("crdschema: %s version %s is not served", doc.Spec.Names.Kind, version)
		}
		s := new(Schema)
		if err := strictJSON(v.Schema.OpenAPIV3Schema, s); err != nil {
			return nil, fmt.Errorf("crdschema: %s %s schema: %w", doc.Spec.Names.Kind, version, err)
		}
		if err := s.compile("<root>"); err != nil {
			return nil, fmt.Errorf("crdschema: %s %s schema: %w", doc.Spec.Names.Kind, version, err)
		}
		return &CRD{Group: doc.Spec.Group, Kind: doc.Spec.Names.Kind, Version: version, Schema: s}, nil
	}
	return nil, fmt.Errorf("crdschema: %s has no version %s", doc.Spec.Names.Kind, version)
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// compile checks the schema is one this package can enforce and compiles
// patterns and enums.
func (s *Schema) compile(path string) error {
	if s.Pattern != "" {
		re, err := regexp.Compile(s.Pattern)
		if err != nil {
			return fmt.Errorf("%s: pattern %q: %w", path, s.Pattern, err)
		}
		s.pattern = re
	}
	for _, raw := range s.Enum {
		v, err := decodeValue(raw)
		if err != nil {
			return fmt.Errorf("%s: enum value: %w", path, err)
		}
		s.enumValues = append(s.enumValues, v)
	}
	switch s.Type {
	case "", "object", "array", "string", "integer", "number", "boolean":
	default:
		return fmt.Errorf("%s: unknown type %q", path, s.Type)
	}
	if s.Type == "" && !s.IntOrString && !s.PreserveUnknownFields && len(s.AnyOf) == 0 {
		return fmt.Errorf("%s: no type (not structural)", path)
	}
	for name, p := range s.Properties {
		if err := p.compile(path + "." + name); err != nil {
			return err
		}
	}
	if s.Items != nil {
		if err := s.Items.compile(path + "[]"); err != nil {
			return err
		}
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		if err := s.AdditionalProperties.Schema.compile(path + ".*"); err != nil {
			return err
		}
	}
	for i, a := range s.AnyOf {
		// anyOf branches are value validations only: they may omit type.
		if a.Type == "" {
			a.Type = s.Type
		}
		if err := a.compile(fmt.Sprintf("%s.anyOf[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// decodeValue decodes JSON keeping numbers exact (json.Number).
func decodeValue(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// Rules returns the CEL rules (x-kubernetes-validations) anywhere in the
// schema, keyed by path, so a caller can see what Validate does not check.
func (s *Schema) Rules() map[string][]ValidationRule {
	out := map[string][]ValidationRule{}
	var walk func(path string, s *Schema)
	walk = func(path string, s *Schema) {
		if s == nil {
			return
		}
		if len(s.Validations) > 0 {
			out[path] = s.Validations
		}
		for name, p := range s.Properties {
			walk(path+"."+name, p)
		}
		walk(path+"[]", s.Items)
		if s.AdditionalProperties != nil {
			walk(path+".*", s.AdditionalProperties.Schema)
		}
	}
	walk("", s)
	return out
}

// ValidateYAML validates one YAML document against the CRD: apiVersion and
// kind must match it, and every field must satisfy the schema. The error
// joins one line per violation, each wrapping ErrInvalid and naming the
// field path.
func (c *CRD) ValidateYAML(doc []byte) error {
	js, err := yaml.YAMLToJSONStrict(doc) // duplicate keys are an error, as in the API server
	if err != nil {
		return fmt.Errorf("not YAML: %w: %w", err, ErrInvalid)
	}
	return c.ValidateJSON(js)
}

// ValidateJSON is ValidateYAML for a JSON document.
func (c *CRD) ValidateJSON(js []byte) error {
	obj, err := decodeValue(js)
	if err != nil {
		return fmt.Errorf("not JSON: %w: %w", err, ErrInvalid)
	}
	return c.Validate(obj)
}

// Validate validates a decoded object (numbers as json.Number or Go
// numbers).
func (c *CRD) Validate(obj any) error {
	m, ok := obj.(map[string]any)
	if !ok {
		return fmt.Errorf("document is %s, want an object: %w", typeName(obj), ErrInvalid)
	}
	v := &validator{}
	if m["apiVersion"] != c.APIVersion() || m["kind"] != c.Kind {
		v.errorf("", "apiVersion/kind %v/%v, want %s/%s", m["apiVersion"], m["kind"], c.APIVersion(), c.Kind)
	}
	// The API server checks the root metadata as ObjectMeta, whatever the
	// CRD's schema says (controller-gen writes just "type: object").
	if md, ok := m["metadata"]; ok {
		b, _ := json.Marshal(md)
		var om metav1.ObjectMeta
		if err := strictJSON(b, &om); err != nil {
			v.errorf(".metadata", "not an ObjectMeta: %v", err)
		} else if om.Name == "" && om.GenerateName == "" {
			v.errorf(".metadata.name", "required")
		}
	} else {
		v.errorf(".metadata", "required")
	}
	rest := make(map[string]any, len(m))
	for k, val := range m {
		if k != "metadata" {
			rest[k] = val
		}
	}
	root := *c.Schema
	root.Properties = maps(c.Schema.Properties, "metadata")
	v.validate("", &root, rest)
	return errors.Join(v.errs...)
}

// maps copies props without the named key.
func maps(props map[string]*Schema, drop string) map[string]*Schema {
	out := make(map[string]*Schema, len(props))
	for k, p := range props {
		if k != drop {
			out[k] = p
		}
	}
	return out
}

type validator struct{ errs []error }

func (v *validator) errorf(path, format string, a ...any) {
	if path == "" {
		path = "<root>"
	}
	v.errs = append(v.errs, fmt.Errorf("%s: %s: %w", path, fmt.Sprintf(format, a...), ErrInvalid))
}

func (v *validator) validate(path string, s *Schema, val any) {
	if val == nil {
		if !s.Nullable {
			v.errorf(path, "null, but the field is not nullable")
		}
		return
	}
	if s.IntOrString {
		switch val.(type) {
		case string:
		default:
			if _, ok := asInteger(val); !ok {
				v.errorf(path, "%s, want an integer or a string", typeName(val))
				return
			}
		}
	} else if !v.checkType(path, s, val) {
		return
	}
	v.checkValue(path, s, val)
	for i, a := range s.AnyOf {
		if (&validator{}).matches(a, val) {
			break
		}
		if i == len(s.AnyOf)-1 {
			v.errorf(path, "matches none of anyOf")
		}
	}
	switch t := val.(type) {
	case map[string]any:
		v.object(path, s, t)
	case []any:
		v.array(path, s, t)
	}
}

// matches reports whether val satisfies s (used for anyOf branches).
func (v *validator) matches(s *Schema, val any) bool {
	v.validate("", s, val)
	return len(v.errs) == 0
}

func (v *validator) checkType(path string, s *Schema, val any) bool {
	want := s.Type
	if want == "" {
		return true // preserve-unknown-fields or anyOf-only node
	}
	ok := false
	switch want {
	case "object":
		_, ok = val.(map[string]any)
	case "array":
		_, ok = val.([]any)
	case "string":
		_, ok = val.(string)
	case "boolean":
		_, ok = val.(bool)
	case "integer":
		_, ok = asInteger(val)
	case "number":
		_, ok = asFloat(val)
	}
	if !ok {
		v.errorf(path, "%s, want %s", typeName(val), want)
	}
	return ok
}

func (v *validator) checkValue(path string, s *Schema, val any) {
	if len(s.enumValues) > 0 && !slices.ContainsFunc(s.enumValues, func(e any) bool { return equalValues(e, val) }) {
		v.errorf(path, "%v is not one of %v", display(val), displayAll(s.enumValues))
	}
	switch t := val.(type) {
	case string:
		n := int64(len([]rune(t)))
		if s.MinLength != nil && n < *s.MinLength {
			v.errorf(path, "%d characters, want at least %d", n, *s.MinLength)
		}
		if s.MaxLength != nil && n > *s.MaxLength {
			v.errorf(path, "%d characters, want at most %d", n, *s.MaxLength)
		}
		if s.pattern != nil && !s.pattern.MatchString(t) {
			v.errorf(path, "%q does not match %s", t, s.Pattern)
		}
		if s.Format == "date-time" {
			if _, err := time.Parse(time.RFC3339, t); err != nil {
				v.errorf(path, "%q is not a date-time", t)
			}
		}
	case []any:
		n := int64(len(t))
		if s.MinItems != nil && n < *s.MinItems {
			v.errorf(path, "%d items, want at least %d", n, *s.MinItems)
		}
		if s.MaxItems != nil && n > *s.MaxItems {
			v.errorf(path, "%d items, want at most %d", n, *s.MaxItems)
		}
	case map[string]any:
		n := int64(len(t))
		if s.MinProperties != nil && n < *s.MinProperties {
			v.errorf(path, "%d properties, want at least %d", n, *s.MinProperties)
		}
		if s.MaxProperties != nil && n > *s.MaxProperties {
			v.errorf(path, "%d properties, want at most %d", n, *s.MaxProperties)
		}
	}
	if f, ok := asFloat(val); ok {
		if _, isStr := val.(string); !isStr {
			if s.Minimum != nil && (f < *s.Minimum || s.ExclusiveMinimum && f == *s.Minimum) {
				v.errorf(path, "%v is below the minimum %v", display(val), *s.Minimum)
			}
			if s.Maximum != nil && (f > *s.Maximum || s.ExclusiveMaximum && f == *s.Maximum) {
				v.errorf(path, "%v is above the maximum %v", display(val), *s.Maximum)
			}
			if i, ok := asInteger(val); ok && s.Format == "int32" && (i < math.MinInt32 || i > math.MaxInt32) {
				v.errorf(path, "%d does not fit int32", i)
			}
		}
	}
}

func (v *validator) object(path string, s *Schema, m map[string]any) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // violations in a stable order
	for _, r := range s.Required {
		if _, ok := m[r]; !ok {
			v.errorf(path+"."+r, "required")
		}
	}
	for _, k := range keys {
		sub := path + "." + k
		if p, ok := s.Properties[k]; ok {
			v.validate(sub, p, m[k])
			continue
		}
		if s.EmbeddedResource && (k == "apiVersion" || k == "kind" || k == "metadata") {
			continue
		}
		switch {
		case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
			v.validate(sub, s.AdditionalProperties.Schema, m[k])
		case s.AdditionalProperties != nil && s.AdditionalProperties.Allows:
		case s.PreserveUnknownFields:
		default:
			v.errorf(sub, "unknown field")
		}
	}
}

func (v *validator) array(path string, s *Schema, items []any) {
	for i, it := range items {
		if s.Items != nil {
			v.validate(fmt.Sprintf("%s[%d]", path, i), s.Items, it)
		}
	}
	switch s.ListType {
	case "set":
		for i := range items {
			for j := 0; j < i; j++ {
				if equalValues(items[i], items[j]) {
					v.errorf(fmt.Sprintf("%s[%d]", path, i), "duplicate of [%d] in a set", j)
				}
			}
		}
	case "map":
		seen := map[string]int{}
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue // reported by the items schema
			}
			key := make([]string, 0, len(s.ListMapKeys))
			for _, k := range s.ListMapKeys {
				kv, ok := m[k]
				if !ok && s.Items != nil && s.Items.Properties[k] != nil && s.Items.Properties[k].Default != nil {
					kv, _ = decodeValue(s.Items.Properties[k].Default)
					ok = true
				}
				if !ok {
					v.errorf(fmt.Sprintf("%s[%d].%s", path, i, k), "required: a key of this list-map")
				}
				key = append(key, fmt.Sprint(display(kv)))
			}
			ks := strings.Join(key, "\x00")
			if j, dup := seen[ks]; dup {
				v.errorf(fmt.Sprintf("%s[%d]", path, i), "duplicate key %v of [%d]", key, j)
			}
			seen[ks] = i
		}
	}
}

func asInteger(val any) (int64, bool) {
	switch t := val.(type) {
	case json.Number:
		i, err := t.Int64()
		return i, err == nil
	case int:
		return int64(t), true
	case int64:
		return t, true
	case int32:
		return int64(t), true
	case float64:
		if t == math.Trunc(t) && !math.IsInf(t, 0) {
			return int64(t), true
		}
	}
	return 0, false
}

func asFloat(val any) (float64, bool) {
	switch t := val.(type) {
	case json.Number:
		f, err := t.Float64()
		return f, err == nil
	case float64:
		return t, true
	case int:
		return float64(t), true
	case int64:
		return float64(t), true
	case int32:
		return float64(t), true
	}
	return 0, false
}

func typeName(val any) string {
	switch val.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	if _, ok := asInteger(val); ok {
		return "an integer"
	}
	if _, ok := asFloat(val); ok {
		return "a number"
	}
	return fmt.Sprintf("%T", val)
}

func equalValues(a, b any) bool {
	ja, _ := json.Marshal(normalize(a))
	jb, _ := json.Marshal(normalize(b))
	return bytes.Equal(ja, jb)
}

// normalize turns numbers into float64 so 1 and 1.0 compare equal.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = normalize(e)
		}
		return out
	}
	if _, isStr := v.(string); !isStr {
		if f, ok := asFloat(v); ok {
			return f
		}
	}
	return v
}

func display(v any) any {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return v
}

func displayAll(vs []any) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = display(v)
	}
	return out
}
