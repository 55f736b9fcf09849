package metering

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// applyEdits in place and by copy give the same bytes.
func TestApplyEditsInPlace(t *testing.T) {
	raw := `{"a":{"b":1},"c":2}`
	edits := func() []edit {
		return []edit{{at: 18, text: `,"z":9`}, {at: 11, text: `,"y":8`}, {at: 18, text: `,"w":7`}}
	}
	copied := applyEdits([]byte(raw), edits())
	spare := make([]byte, len(raw), len(raw)+64)
	copy(spare, raw)
	inPlace := applyEdits(spare, edits())
	if string(copied) != string(inPlace) || &inPlace[0] != &spare[0] {
		t.Fatalf("copied %s, in place %s", copied, inPlace)
	}
	if !json.Valid(copied) {
		t.Fatalf("not JSON: %s", copied)
	}
}

// scanObjectWithDecoder is the json.Decoder reading that scanObject
// replaced: the reference it is fuzzed against.
func scanObjectWithDecoder(b []byte, base int, watched []string) (*object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	o := &object{members: map[string]member{}, empty: true}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, errors.New("not valid JSON")
		}
		key, _ := t.(string)
		o.empty = false
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errors.New("not valid JSON")
		}
		i := slices.IndexFunc(watched, func(w string) bool { return strings.EqualFold(w, key) })
		if i < 0 {
			continue
		}
		if key != watched[i] {
			return nil, fmt.Errorf("case")
		}
		if _, dup := o.members[key]; dup {
			return nil, fmt.Errorf("twice")
		}
		end := int(dec.InputOffset())
		o.members[key] = member{raw: raw, start: base + end - len(raw), end: base + end}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("not valid JSON")
	}
	o.closeAt = base + int(dec.InputOffset()) - 1
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value")
	}
	return o, nil
}

// checkScanAgainstJSON checks scanObject against encoding/json: it accepts
// what the decoder accepts (in valid UTF-8), finds the same members at the
// same offsets, and what it keeps of each watched key is what
// json.Unmarshal reads for that key (encoding/json matches keys without
// case and keeps the last duplicate, which the refusals rule out).
func checkScanAgainstJSON(t *testing.T, body []byte) {
	for _, watched := range [][]string{openAIKeys, geminiKeys, geminiConfigKeys} {
		got, err := scanObject(body, 3, watched)
		want, wantErr := scanObjectWithDecoder(body, 3, watched)
		if wantErr == nil && !utf8.Valid(body) {
			wantErr = errors.New("not valid UTF-8")
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: scanObject says %v, the decoder %v", body, err, wantErr)
		}
		if err != nil {
			continue
		}
		if got.closeAt != want.closeAt || got.empty != want.empty || len(got.members) != len(want.members) {
			t.Fatalf("%q: scanned %+v, decoded %+v", body, got, want)
		}
		for k, m := range want.members {
			g := got.members[k]
			if string(g.raw) != string(m.raw) || g.start != m.start || g.end != m.end || string(body[g.start-3:g.end-3]) != string(g.raw) {
				t.Fatalf("%q: %s scanned %+v, decoded %+v", body, k, g, m)
			}
		}
		fields := make([]reflect.StructField, len(watched))
		for i, w := range watched {
			fields[i] = reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[json.RawMessage](), Tag: reflect.StructTag(`json:"` + w + `"`)}
		}
		v := reflect.New(reflect.StructOf(fields))
		if err := json.Unmarshal(body, v.Interface()); err != nil {
			var typeErr *json.UnmarshalTypeError
			if !errors.As(err, &typeErr) {
				t.Fatalf("%q: scanned, but json.Unmarshal: %v", body, err)
			}
			continue
		}
		for i, w := range watched {
			read := v.Elem().Field(i).Interface().(json.RawMessage)
			m, ok := got.members[w]
			if ok != (read != nil) || string(read) != string(m.raw) {
				t.Fatalf("%q: json.Unmarshal reads %s as %s, the scan as %s", body, w, read, m.raw)
			}
		}
	}
}
