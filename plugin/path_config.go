package plugin

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/token"
)

// DefaultTokenTTL is a token's lifetime when neither the request, its route
// nor the config sets one.
const DefaultTokenTTL = 24 * time.Hour

// DefaultTokenMaxTTL bounds a token's whole life, renewals included, when
// neither its route nor the config sets a max_ttl. Without it the bound would
// be the mount's max lease TTL, 768h on a default Vault, and any token may
// renew a lease whose ID it knows.
const DefaultTokenMaxTTL = 24 * time.Hour

// configKey is where the engine's config is stored.
const configKey = "config"

type configEntry struct {
	ProxyURL    string        `json:"proxy_url"`
	DefaultTTL  time.Duration `json:"default_ttl"`
	MaxTTL      time.Duration `json:"max_ttl"`
	TokenPrefix string        `json:"token_prefix"`
}

func defaultConfig() *configEntry {
	return &configEntry{DefaultTTL: DefaultTokenTTL, TokenPrefix: token.DefaultPrefix}
}

// maxTTL is the engine's bound on a token's life: max_ttl, or
// DefaultTokenMaxTTL when unset (0, as configs written before it store).
func (c *configEntry) maxTTL() time.Duration {
	return firstPositive(c.MaxTTL, DefaultTokenMaxTTL)
}

func (b *backend) pathConfig() []*framework.Path {
	return []*framework.Path{{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "configuration",
		},
		Fields: map[string]*framework.FieldSchema{
			"proxy_url": {
				Type:        framework.TypeString,
				Description: "Base URL of phantom-proxy, advertised to clients when they mint tokens (for example https://phantom.internal:8443).",
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Proxy URL",
				},
			},
			"default_ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Token lifetime when neither the mint request nor the route sets one. Default 24h.",
				Default:     int(DefaultTokenTTL / time.Second),
			},
			"max_ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Longest a token may live, renewals included, unless a route sets less. Default 24h (0 restores it); never more than the mount's max lease TTL.",
			},
			"token_prefix": {
				Type:        framework.TypeString,
				Description: "Prefix of minted tokens unless the route sets one: 1-32 of A-Z a-z 0-9 _ -. Default phm_.",
				Default:     token.DefaultPrefix,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathConfigDelete,
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "delete"},
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Configure the Phantom engine.",
		HelpDescription: configHelp,
	}}
}

// getConfig returns the stored config, or the defaults when none is stored.
func getConfig(ctx context.Context, s logical.Storage) (*configEntry, error) {
	entry, err := s.Get(ctx, configKey)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg := defaultConfig()
	if entry == nil {
		return cfg, nil
	}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	return cfg, nil
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"proxy_url":    cfg.ProxyURL,
		"default_ttl":  int64(cfg.DefaultTTL / time.Second),
		"max_ttl":      int64(cfg.maxTTL() / time.Second),
		"token_prefix": cfg.TokenPrefix,
	}}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if v, ok := d.GetOk("proxy_url"); ok {
		cfg.ProxyURL = v.(string)
		if cfg.ProxyURL != "" {
			if err := validateProxyURL(cfg.ProxyURL); err != nil {
				return logical.ErrorResponse("proxy_url: %s", err), nil
			}
		}
	}
	if v, ok := d.GetOk("default_ttl"); ok {
		cfg.DefaultTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_ttl"); ok {
		cfg.MaxTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("token_prefix"); ok {
		cfg.TokenPrefix = v.(string)
	}
	switch {
	case cfg.DefaultTTL <= 0:
		return logical.ErrorResponse("default_ttl must be positive"), nil
	case cfg.MaxTTL < 0:
		return logical.ErrorResponse("max_ttl must not be negative"), nil
	case cfg.DefaultTTL > cfg.maxTTL():
		return logical.ErrorResponse("default_ttl (%s) must not exceed max_ttl (%s); raise max_ttl as well", cfg.DefaultTTL, cfg.maxTTL()), nil
	case !token.ValidPrefix(cfg.TokenPrefix):
		return logical.ErrorResponse("token_prefix must be 1-32 characters of A-Z a-z 0-9 _ -"), nil
	}
	entry, err := logical.StorageEntryJSON(configKey, cfg)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("writing config: %w", err)
	}
	return nil, nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if err := req.Storage.Delete(ctx, configKey); err != nil {
		return nil, fmt.Errorf("deleting config: %w", err)
	}
	return nil, nil
}

func validateProxyURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme must be http or https")
	case u.Host == "":
		return fmt.Errorf("must be an absolute URL with a host")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("must not carry user info, a query or a fragment")
	}
	return nil
}

const configHelp = `
Engine-wide settings:

  proxy_url     the phantom-proxy base URL that clients should use; returned
                with every minted token and readable by CI:
                  vault read -field=proxy_url phantom/config
  default_ttl   token lifetime when neither the request nor the route sets one
                (default 24h)
  max_ttl       the longest any token may live, renewals included, unless a
                route sets less (default 24h; never more than the mount's max
                lease TTL). A token's own bound is fixed when it is minted.
  token_prefix  prefix of minted tokens (default phm_); routes may override it
                so tokens look like the key format an SDK checks for

Reading returns the effective values; deleting restores the defaults.
`
