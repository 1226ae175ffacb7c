variable "name" {
  type        = string
  description = "Name of the deployment (kebab-case); prefixes every resource name."
}

variable "service_name" {
  type        = string
  description = "The service; also the proxy role (the catalog's `proxies` key, Envoy's node.cluster) and its Cloud Map name."
}

variable "cluster_arn" {
  type        = string
  description = "The ECS cluster the service runs in."
}

variable "vpc_id" {
  type        = string
  description = "The VPC."
}

variable "vpc_cidr_block" {
  type        = string
  description = "The VPC's address range: clients and Prometheus reach the service from it."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the tasks."
}

variable "namespace_id" {
  type        = string
  description = "The Cloud Map namespace the service registers in."
}

variable "envoy_image" {
  type        = string
  description = "The generic Envoy image (infra/docker/Dockerfile, target envoy)."
}

variable "loader_image" {
  type        = string
  description = "The s3-config-loader image, run once before Envoy to render its bootstrap (without identity)."
}

variable "config_bucket" {
  type        = string
  description = "The configuration bucket holding the bootstrap template."
}

variable "bootstrap_key" {
  type        = string
  description = "Key of the Envoy bootstrap template (rendered with the task metadata and PROXY)."
  default     = "envoy/bootstrap.yaml.tmpl"
}

variable "config_kms_key_arn" {
  type        = string
  description = "The configuration bucket's KMS key."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "The KMS key of the environment's log groups."
}

variable "listener_ports" {
  type        = list(number)
  description = "The ports of the proxy role's listeners in the catalog, open to the VPC."
}

variable "xds_host" {
  type        = string
  description = "The control plane's host name (xds-server module's xds_host), which Envoy dials on port 18000."
}

variable "identity" {
  type        = bool
  description = "Envoy proves the task role to the control plane and connects with mutual TLS (XDS_SERVER_IDENTITY=1), as a control plane with require_identity needs; false for one without."
  default     = true
}

variable "xds_ca_certificate" {
  type        = string
  description = "The control plane's CA certificate, PEM (xds-server module's ca_certificate_pem); needed with identity."
  default     = ""
}

variable "catalog_prefix" {
  type        = string
  description = "The control plane's catalog prefix in the config bucket (ends in /); this service's fragment is <prefix><service_name>.yaml."
  default     = "xds/catalog.d/"
}

variable "catalog_fragments_in_apply" {
  type        = map(string)
  description = "Other services' catalog fragments that change in the same apply, by name under catalog_prefix (e.g. { \"connector.yaml\" = <the connector envoy-service's catalog_fragment output> }): this service's fragment is validated against the prefix with these versions in place of theirs, so related changes (a new upstream in one, a route to it in the other) validate together. Pass every fragment the apply changes that this one relies on or that relies on it."
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.catalog_fragments_in_apply) : can(regex("^[A-Za-z0-9_.-]+\\.(yaml|yml|json)$", name))])
    error_message = "catalog_fragments_in_apply: name each fragment by its file name under catalog_prefix (SERVICE.yaml)."
  }
}

variable "xds_server_command" {
  type        = string
  description = "The xds-server command (a path, or a name on the PATH) that the apply runs where Terraform runs, with its AWS credentials, to validate the rendered fragment against the fragments under catalog_prefix before uploading it (xds-server validate FRAGMENT --with s3://BUCKET/PREFIX/); empty skips the check."
  default     = "xds-server"
}

variable "catalog_template" {
  type        = string
  description = "Path of the service's catalog fragment, a Terraform template of a catalog (version 1): the proxy role named service_name, with the template's task_role_arn in its identity.iam_roles, `tls: $${listener_tls}` on its listeners, and its own upstreams."
}

variable "listener_tls" {
  type = object({
    certificate = optional(string, "mesh")
    mode        = optional(string, "strict")
    allow       = optional(list(string), [])
  })
  description = "TLS of the service's listeners, given to the catalog template as $${listener_tls} (a catalog `tls` value, or null). certificate: \"mesh\" (the default: mutual TLS with the proxy's mesh identity; callers must be proxies of this network, or those in allow), an ACM certificate ARN (edge TLS; list it in the xds-server module's tls_certificate_arns), or \"none\". mode: \"strict\", or \"permissive\" to take plaintext too while callers move to TLS."
  default     = {}
  nullable    = false
  validation {
    condition     = contains(["strict", "permissive"], var.listener_tls.mode)
    error_message = "listener_tls.mode is \"strict\" or \"permissive\"."
  }
  validation {
    condition     = contains(["mesh", "none"], var.listener_tls.certificate) || can(regex("^arn:[a-z-]+:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.listener_tls.certificate))
    error_message = "listener_tls.certificate is \"mesh\", \"none\" or an ACM certificate ARN."
  }
  validation {
    condition     = length(var.listener_tls.allow) == 0 || var.listener_tls.certificate == "mesh"
    error_message = "listener_tls.allow names mesh callers: it needs certificate \"mesh\"."
  }
}

variable "catalog_vars" {
  type        = map(string)
  description = "The template's variables besides task_role_arn (the task role) and listener_tls, which the module gives."
  default     = {}
}

variable "app_containers" {
  type = list(object({
    name        = string
    image       = string
    command     = optional(list(string))
    environment = optional(map(string), {})
    secrets     = optional(map(string), {})
  }))
  description = "The application's containers, beside Envoy in the same task (Envoy reaches them on localhost). `secrets`: variable name -> a Secrets Manager ARN (optionally `<arn>:<json key>::`) or an SSM parameter ARN, set by ECS at start, e.g. PGPASSWORD from base/database's secret_arn; the execution role may read exactly those."
  default     = []
  validation {
    condition = alltrue(flatten([for c in var.app_containers : [
      for v in values(c.secrets) : can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[^:]+(:[^:]*:[^:]*:[^:]*)?|ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+)$", v))
    ]]))
    error_message = "app_containers[*].secrets: each value must be a Secrets Manager secret ARN (optionally <arn>:<json key>:<version stage>:<version id>) or an SSM parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME), as ECS takes them."
  }
}

variable "secrets_kms_key_arns" {
  type        = list(string)
  description = "The KMS keys of the app containers' secrets (base/database's kms_key_arn), which the execution role may decrypt with."
  default     = []
}

variable "security_group_ids" {
  type        = list(string)
  description = "Security groups the tasks join besides their own, e.g. base/database's client_security_group_id."
  default     = []
}

variable "desired_count" {
  type        = number
  description = "Tasks of the service."
  default     = 1
}

variable "log_retention_days" {
  type        = number
  description = "Days the service's logs are kept."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}

variable "transparent_egress" {
  type = object({
    app_ports          = list(number)
    egress_ignored_ips = optional(list(string), [])
    # Envoy routes only what the catalog names and has no passthrough: any other TCP the app
    # dials would be closed. 443 (AWS APIs, ECS Exec, other HTTPS) leaves directly by default.
    egress_ignored_ports = optional(list(number), [443])
  })
  description = "App Mesh style transparent proxying: the task's proxyConfiguration (APPMESH) has ECS redirect the task's outbound TCP to Envoy's port 15001 and inbound TCP to app_ports to its port 15000, with iptables; Envoy runs as UID 1337, whose own connections are not redirected, nor those of GID 1337 (the bootstrap init container), to the task metadata and credentials endpoints (169.254.170.2, 169.254.169.254) or to egress_ignored_ips and egress_ignored_ports. egress_ignored_ports is [443] unless given: a list given replaces it, so keep 443 in it (e.g. [443, 5432] for a database Envoy does not proxy). The catalog fragment must give the proxy listeners on 15000 and 15001 with original_destination (docs/catalog.md). null (the default): no redirect."
  default     = null
  validation {
    condition     = var.transparent_egress == null || length(try(var.transparent_egress.app_ports, [])) > 0
    error_message = "transparent_egress.app_ports lists the ports the application listens on (at least one): ECS redirects connections to them to Envoy's ingress port."
  }
  validation {
    condition = var.transparent_egress == null || alltrue([
      for p in concat(try(var.transparent_egress.app_ports, []), try(var.transparent_egress.egress_ignored_ports, [])) :
      p >= 1 && p <= 65535 && floor(p) == p && !contains([15000, 15001], p)
    ])
    error_message = "transparent_egress ports are whole numbers 1-65535, other than Envoy's own 15000 and 15001."
  }
  validation {
    condition     = var.transparent_egress == null || length(setintersection(toset(var.listener_ports), toset([15000, 15001]))) == 0
    error_message = "listener_ports: leave out 15000 and 15001 with transparent_egress: they are Envoy's ingress and egress ports, reached by ECS's redirect, and the security group would open the task's own egress port to the VPC."
  }
  validation {
    condition = var.transparent_egress == null || length(setintersection(
      toset(try(var.transparent_egress.app_ports, [])), toset(concat(var.listener_ports, [9902]))
    )) == 0
    error_message = "transparent_egress.app_ports: a port the app listens on cannot also be one of Envoy's (listener_ports, or 9902, its stats listener): ECS redirects connections to app ports to Envoy's ingress listener."
  }
}
