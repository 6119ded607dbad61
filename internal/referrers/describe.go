package referrers

import (
	"encoding/json"
	"fmt"
	"mime"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// manifestFields are the parts of an image manifest or index the referrers
// API reports.
type manifestFields struct {
	MediaType    string `json:"mediaType"`
	ArtifactType string `json:"artifactType"`
	Config       *struct {
		MediaType string `json:"mediaType"`
	} `json:"config"`
	Manifests   json.RawMessage   `json:"manifests"`
	Subject     *v1.Descriptor    `json:"subject"`
	Annotations map[string]string `json:"annotations"`
}

// Describe returns the descriptor a manifest contributes to its subject's
// referrers list, and the subject ("" when the manifest has none). body is
// the manifest as pushed, contentType the Content-Type it was pushed with
// ("" when unknown), and d the digest it is stored under.
//
// The artifact type follows the distribution spec: the manifest's
// artifactType, else (image manifests only) its config media type.
func Describe(body []byte, contentType string, d digest.Digest) (v1.Descriptor, digest.Digest, error) {
	var m manifestFields
	if err := json.Unmarshal(body, &m); err != nil {
		return v1.Descriptor{}, "", fmt.Errorf("manifest %s is not JSON: %w", d, err)
	}
	if m.Subject == nil || m.Subject.Digest == "" {
		return v1.Descriptor{}, "", nil
	}
	if err := m.Subject.Digest.Validate(); err != nil {
		return v1.Descriptor{}, "", fmt.Errorf("manifest %s: subject digest %q: %w", d, m.Subject.Digest, err)
	}
	mt := m.MediaType
	if mt == "" && contentType != "" {
		if parsed, _, err := mime.ParseMediaType(contentType); err == nil {
			mt = parsed
		}
	}
	isIndex := mt == v1.MediaTypeImageIndex || (mt == "" && m.Manifests != nil)
	if mt == "" {
		mt = v1.MediaTypeImageManifest
		if isIndex {
			mt = v1.MediaTypeImageIndex
		}
	}
	at := m.ArtifactType
	if at == "" && !isIndex && m.Config != nil {
		at = m.Config.MediaType
	}
	desc := v1.Descriptor{
		MediaType:    mt,
		Digest:       d,
		Size:         int64(len(body)),
		ArtifactType: at,
		Annotations:  m.Annotations,
	}
	return desc, m.Subject.Digest, nil
}

// Subject returns the subject of a manifest, "" when it has none or is not
// a manifest berth can read.
func Subject(body []byte) digest.Digest {
	var m manifestFields
	if json.Unmarshal(body, &m) != nil || m.Subject == nil || m.Subject.Digest.Validate() != nil {
		return ""
	}
	return m.Subject.Digest
}
