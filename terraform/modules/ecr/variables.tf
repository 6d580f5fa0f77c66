variable "name_prefix" {
  description = "Repository names are <name_prefix>/<role>, e.g. manyheads-prod/router."
  type        = string
}

variable "repositories" {
  description = "One repository per image role (env/docker/<role>.Dockerfile)."
  type        = set(string)
  default     = ["embedder-cpu", "embedder-gpu", "router", "training"]
}

variable "image_tag_mutability" {
  description = "IMMUTABLE makes a tag (e.g. a git SHA) always mean the same image."
  type        = string
  default     = "IMMUTABLE"

  validation {
    condition     = contains(["MUTABLE", "IMMUTABLE"], var.image_tag_mutability)
    error_message = "image_tag_mutability must be MUTABLE or IMMUTABLE."
  }
}

variable "keep_images" {
  description = "Most recent images kept per repository; older ones are expired."
  type        = number
  default     = 30
}

variable "untagged_expiry_days" {
  description = "Untagged images (superseded layers, failed pushes) are expired after this many days."
  type        = number
  default     = 7
}

variable "force_delete" {
  description = "Allow destroying repositories that still hold images."
  type        = bool
  default     = false
}
