package sigv4

import (
	"bytes"
	"encoding/xml"
	"errors"
	"net/url"
	"strings"
)

// MaxDeleteBody bounds an S3 DeleteObjects body read for its keys: at most
// 1000 keys of at most 1024 bytes each, as S3 allows, and their XML.
const MaxDeleteBody = 2 << 20

// BatchDelete reports whether a path-style request is S3's DeleteObjects
// (POST /<bucket>?delete), whose keys are in its body, not its path.
func BatchDelete(method, path string, query url.Values) (bucket string, ok bool) {
	if method != "POST" || !query.Has("delete") || s3Level(path) != "bucket" {
		return "", false
	}
	bucket, _, _ = strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return bucket, true
}

// DeleteKeys are the object keys of a DeleteObjects body
// (<Delete><Object><Key>...</Key></Object>...</Delete>), each as the
// path-style path "/<bucket>/<key>" that a DELETE of it would have, escaped
// as an SDK escapes it. A body that is not such a document, or names no
// key, or more than S3 allows, is an error.
func DeleteKeys(bucket string, body []byte) ([]string, error) {
	var doc struct {
		XMLName xml.Name `xml:"Delete"`
		Objects []struct {
			Key *string `xml:"Key"`
		} `xml:"Object"`
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		return nil, errors.New("the DeleteObjects body is not a <Delete> document")
	}
	if len(doc.Objects) == 0 || len(doc.Objects) > 1000 {
		return nil, errors.New("a DeleteObjects body names 1 to 1000 keys")
	}
	paths := make([]string, len(doc.Objects))
	for i, o := range doc.Objects {
		if o.Key == nil || *o.Key == "" {
			return nil, errors.New("a DeleteObjects object has no key")
		}
		paths[i] = "/" + bucket + "/" + escape(*o.Key, true)
	}
	return paths, nil
}
