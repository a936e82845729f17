package keyfile

import (
	"encoding/json"
	"errors"
)

// The editing path reads files that have just been checked as JSON; these
// scanners split them into raw pieces without decoding or copying them, so
// that a change to one record of a large file costs little more than
// reading and writing it.

var errScan = errors.New("not the JSON expected")

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at i.
func skipValue(data []byte, i int) (int, error) {
	if i >= len(data) {
		return 0, errScan
	}
	switch data[i] {
	case '"':
		for j := i + 1; j < len(data); j++ {
			switch data[j] {
			case '\\':
				j++
			case '"':
				return j + 1, nil
			}
		}
		return 0, errScan
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, err := skipValue(data, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errScan
	}
	j := i
	for j < len(data) && data[j] != ',' && data[j] != '}' && data[j] != ']' && data[j] != ' ' && data[j] != '\n' && data[j] != '\t' && data[j] != '\r' {
		j++
	}
	if j == i {
		return 0, errScan
	}
	return j, nil
}

// splitObject returns an object's fields, their values as sub-slices of
// data.
func splitObject(data []byte) ([]field, error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, errScan
	}
	var fields []field
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return fields, nil
	}
	for {
		end, err := skipValue(data, i)
		if err != nil || data[i] != '"' {
			return nil, errScan
		}
		var name string
		if err := json.Unmarshal(data[i:end], &name); err != nil {
			return nil, err
		}
		i = skipSpace(data, end)
		if i >= len(data) || data[i] != ':' {
			return nil, errScan
		}
		i = skipSpace(data, i+1)
		end, err = skipValue(data, i)
		if err != nil {
			return nil, err
		}
		fields = append(fields, field{name: name, value: data[i:end]})
		i = skipSpace(data, end)
		if i >= len(data) {
			return nil, errScan
		}
		if data[i] == '}' {
			return fields, nil
		}
		if data[i] != ',' {
			return nil, errScan
		}
		i = skipSpace(data, i+1)
	}
}

// splitArray returns an array's elements as sub-slices of data.
func splitArray(data []byte) ([]json.RawMessage, error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, errScan
	}
	var out []json.RawMessage
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return out, nil
	}
	for {
		end, err := skipValue(data, i)
		if err != nil {
			return nil, err
		}
		out = append(out, data[i:end])
		i = skipSpace(data, end)
		if i >= len(data) {
			return nil, errScan
		}
		if data[i] == ']' {
			return out, nil
		}
		if data[i] != ',' {
			return nil, errScan
		}
		i = skipSpace(data, i+1)
	}
}

// compact reports whether a JSON value has no white space outside its
// strings, i.e. is already as json.Compact would write it.
func compact(data []byte) bool {
	for j := 0; j < len(data); j++ {
		switch data[j] {
		case '"':
			end, err := skipValue(data, j)
			if err != nil {
				return false
			}
			j = end - 1
		case ' ', '\t', '\n', '\r':
			return false
		}
	}
	return true
}
