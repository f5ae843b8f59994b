{{- /*
metav1.Condition as a CRD list: keyed by type, as apimachinery's Condition type declares it (the same in
ServiceExport and ServiceImport status). Included at the indentation of "conditions:".
*/ -}}
{{- define "mcsdns.crd.conditions" -}}
description: The current state of the object, one entry per condition type.
type: array
items:
  description: One aspect of the object's state (apimachinery metav1.Condition).
  type: object
  required:
    - lastTransitionTime
    - message
    - reason
    - status
    - type
  properties:
    lastTransitionTime:
      description: When the condition last changed status.
      type: string
      format: date-time
    message:
      description: What a person needs to know about the transition.
      type: string
      maxLength: 32768
    observedGeneration:
      description: The metadata.generation the condition was computed from.
      type: integer
      format: int64
      minimum: 0
    reason:
      description: Why the condition has its status, one CamelCase word (or several joined by commas).
      type: string
      maxLength: 1024
      minLength: 1
      pattern: ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$
    status:
      description: True, False or Unknown.
      type: string
      enum:
        - "True"
        - "False"
        - Unknown
    type:
      description: The condition's type, CamelCase or domain/CamelCase.
      type: string
      maxLength: 316
      pattern: ^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$
x-kubernetes-list-map-keys:
  - type
x-kubernetes-list-type: map
{{- end }}

{{- /* apiVersion, kind and metadata, as every CRD schema has them. */ -}}
{{- define "mcsdns.crd.typeMeta" -}}
apiVersion:
  description: The versioned schema of this representation of the object.
  type: string
kind:
  description: The REST resource this object represents, in CamelCase.
  type: string
metadata:
  type: object
{{- end }}
