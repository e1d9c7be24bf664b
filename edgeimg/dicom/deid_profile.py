"""The Basic Application Level Confidentiality Profile as data: PS3.15 Annex E, Table E.1-1.

Transcribed from the "Basic Prof." column (and, for the Clean Descriptors and Retain UIDs options,
their columns) of Table E.1-1 in the edition of DICOM PS3.15 published on dicom.nema.org as
"current" in June 2025. Keys are tags as integers (group << 16 | element); values are the
table's action codes verbatim: D, Z, X, K, C, U and the compound Z/D, X/Z, X/D, X/Z/D, X/Z/U*.
Kept as a table rather than code so that it can be checked line by line against the standard.
"""

from __future__ import annotations

ACTION_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})

BASIC_PROFILE: dict[int, str] = {
    0x00001000: "X",  # AffectedSOPInstanceUID
    0x00001001: "U",  # RequestedSOPInstanceUID
    0x00020003: "U",  # MediaStorageSOPInstanceUID
    0x00041511: "U",  # ReferencedSOPInstanceUIDInFile
    0x00080012: "X/D",  # InstanceCreationDate
    0x00080013: "X/Z/D",  # InstanceCreationTime
    0x00080014: "U",  # InstanceCreatorUID
    0x00080015: "X",  # InstanceCoercionDateTime
    0x00080017: "U",  # AcquisitionUID
    0x00080018: "U",  # SOPInstanceUID
    0x00080019: "U",  # PyramidUID
    0x00080020: "Z",  # StudyDate
    0x00080021: "X/D",  # SeriesDate
    0x00080022: "X/Z",  # AcquisitionDate
    0x00080023: "Z/D",  # ContentDate
    0x00080024: "X",  # OverlayDate
    0x00080025: "X",  # CurveDate
    0x0008002A: "X/Z/D",  # AcquisitionDateTime
    0x00080030: "Z",  # StudyTime
    0x00080031: "X/D",  # SeriesTime
    0x00080032: "X/Z",  # AcquisitionTime
    0x00080033: "Z/D",  # ContentTime
    0x00080034: "X",  # OverlayTime
    0x00080035: "X",  # CurveTime
    0x00080050: "Z",  # AccessionNumber
    0x00080054: "X",  # RetrieveAETitle
    0x00080055: "X",  # StationAETitle
    0x00080058: "U",  # FailedSOPInstanceUIDList
    0x00080080: "X/Z/D",  # InstitutionName
    0x00080081: "X",  # InstitutionAddress
    0x00080082: "X/Z/D",  # InstitutionCodeSequence
    0x00080090: "Z",  # ReferringPhysicianName
    0x00080092: "X",  # ReferringPhysicianAddress
    0x00080094: "X",  # ReferringPhysicianTelephoneNumbers
    0x00080096: "X",  # ReferringPhysicianIdentificationSequence
    0x0008009C: "Z",  # ConsultingPhysicianName
    0x0008009D: "X",  # ConsultingPhysicianIdentificationSequence
    0x00080106: "D",  # ContextGroupVersion
    0x00080107: "D",  # ContextGroupLocalVersion
    0x00080201: "X",  # TimezoneOffsetFromUTC
    0x00081000: "X",  # NetworkID
    0x00081010: "X/Z/D",  # StationName
    0x00081030: "X",  # StudyDescription
    0x0008103E: "X",  # SeriesDescription
    0x00081040: "X",  # InstitutionalDepartmentName
    0x00081041: "X",  # InstitutionalDepartmentTypeCodeSequence
    0x00081048: "X",  # PhysiciansOfRecord
    0x00081049: "X",  # PhysiciansOfRecordIdentificationSequence
    0x00081050: "X",  # PerformingPhysicianName
    0x00081052: "X",  # PerformingPhysicianIdentificationSequence
    0x00081060: "X",  # NameOfPhysiciansReadingStudy
    0x00081062: "X",  # PhysiciansReadingStudyIdentificationSequence
    0x00081070: "X/Z/D",  # OperatorsName
    0x00081072: "X/D",  # OperatorIdentificationSequence
    0x00081080: "X",  # AdmittingDiagnosesDescription
    0x00081084: "X",  # AdmittingDiagnosesCodeSequence
    0x00081088: "X",  # PyramidDescription
    0x00081110: "X/Z",  # ReferencedStudySequence
    0x00081111: "X/Z/D",  # ReferencedPerformedProcedureStepSequence
    0x00081120: "X",  # ReferencedPatientSequence
    0x00081140: "X/Z/U*",  # ReferencedImageSequence
    0x00081155: "U",  # ReferencedSOPInstanceUID
    0x00081195: "U",  # TransactionUID
    0x00081301: "X",  # (not in pydicom's dictionary)
    0x00081302: "X",  # (not in pydicom's dictionary)
    0x00081303: "X",  # (not in pydicom's dictionary)
    0x00081304: "X",  # (not in pydicom's dictionary)
    0x00082111: "X",  # DerivationDescription
    0x00082112: "X/Z/U*",  # SourceImageSequence
    0x00083010: "U",  # IrradiationEventUID
    0x00084000: "X",  # IdentifyingComments
    0x00100010: "Z",  # PatientName
    0x00100011: "X",  # (not in pydicom's dictionary)
    0x00100012: "X",  # (not in pydicom's dictionary)
    0x00100013: "X",  # (not in pydicom's dictionary)
    0x00100014: "X",  # (not in pydicom's dictionary)
    0x00100015: "X",  # (not in pydicom's dictionary)
    0x00100016: "X",  # (not in pydicom's dictionary)
    0x00100020: "Z/D",  # PatientID
    0x00100021: "X",  # IssuerOfPatientID
    0x00100030: "Z",  # PatientBirthDate
    0x00100032: "X",  # PatientBirthTime
    0x00100040: "Z",  # PatientSex
    0x00100041: "X",  # (not in pydicom's dictionary)
    0x00100042: "X",  # (not in pydicom's dictionary)
    0x00100043: "X",  # (not in pydicom's dictionary)
    0x00100044: "X",  # (not in pydicom's dictionary)
    0x00100045: "X",  # (not in pydicom's dictionary)
    0x00100046: "X",  # (not in pydicom's dictionary)
    0x00100047: "X",  # (not in pydicom's dictionary)
    0x00100050: "X",  # PatientInsurancePlanCodeSequence
    0x00100101: "X",  # PatientPrimaryLanguageCodeSequence
    0x00100102: "X",  # PatientPrimaryLanguageModifierCodeSequence
    0x00101000: "X",  # OtherPatientIDs
    0x00101001: "X",  # OtherPatientNames
    0x00101002: "X",  # OtherPatientIDsSequence
    0x00101005: "X",  # PatientBirthName
    0x00101010: "X",  # PatientAge
    0x00101020: "X",  # PatientSize
    0x00101030: "X",  # PatientWeight
    0x00101040: "X",  # PatientAddress
    0x00101050: "X",  # InsurancePlanIdentification
    0x00101060: "X",  # PatientMotherBirthName
    0x00101080: "X",  # MilitaryRank
    0x00101081: "X",  # BranchOfService
    0x00101090: "X",  # MedicalRecordLocator
    0x00101100: "X",  # ReferencedPatientPhotoSequence
    0x00102000: "X",  # MedicalAlerts
    0x00102110: "X",  # Allergies
    0x00102150: "X",  # CountryOfResidence
    0x00102152: "X",  # RegionOfResidence
    0x00102154: "X",  # PatientTelephoneNumbers
    0x00102155: "X",  # PatientTelecomInformation
    0x00102160: "X",  # EthnicGroup
    0x00102161: "X",  # EthnicGroupCodeSequence
    0x00102162: "X",  # (not in pydicom's dictionary)
    0x00102180: "X",  # Occupation
    0x001021A0: "X",  # SmokingStatus
    0x001021B0: "X",  # AdditionalPatientHistory
    0x001021C0: "X",  # PregnancyStatus
    0x001021D0: "X",  # LastMenstrualDate
    0x001021F0: "X",  # PatientReligiousPreference
    0x00102203: "X/Z",  # PatientSexNeutered
    0x00102297: "X",  # ResponsiblePerson
    0x00102299: "X",  # ResponsibleOrganization
    0x00104000: "X",  # PatientComments
    0x00120010: "D",  # ClinicalTrialSponsorName
    0x00120020: "D",  # ClinicalTrialProtocolID
    0x00120021: "Z",  # ClinicalTrialProtocolName
    0x00120022: "X",  # IssuerOfClinicalTrialProtocolID
    0x00120023: "X",  # OtherClinicalTrialProtocolIDsSequence
    0x00120030: "Z",  # ClinicalTrialSiteID
    0x00120031: "Z",  # ClinicalTrialSiteName
    0x00120032: "X",  # IssuerOfClinicalTrialSiteID
    0x00120040: "D",  # ClinicalTrialSubjectID
    0x00120041: "X",  # IssuerOfClinicalTrialSubjectID
    0x00120042: "D",  # ClinicalTrialSubjectReadingID
    0x00120043: "X",  # IssuerOfClinicalTrialSubjectReadingID
    0x00120050: "Z",  # ClinicalTrialTimePointID
    0x00120051: "X",  # ClinicalTrialTimePointDescription
    0x00120055: "X",  # IssuerOfClinicalTrialTimePointID
    0x00120060: "Z",  # ClinicalTrialCoordinatingCenterName
    0x00120071: "X",  # ClinicalTrialSeriesID
    0x00120072: "X",  # ClinicalTrialSeriesDescription
    0x00120073: "X",  # IssuerOfClinicalTrialSeriesID
    0x00120081: "D",  # ClinicalTrialProtocolEthicsCommitteeName
    0x00120082: "X",  # ClinicalTrialProtocolEthicsCommitteeApprovalNumber
    0x00120086: "X",  # EthicsCommitteeApprovalEffectivenessStartDate
    0x00120087: "X",  # EthicsCommitteeApprovalEffectivenessEndDate
    0x0014407C: "X",  # CalibrationTime
    0x0014407E: "X",  # CalibrationDate
    0x0016002B: "X",  # MakerNote
    0x0016004B: "X",  # DeviceSettingDescription
    0x0016004D: "X",  # CameraOwnerName
    0x0016004E: "X",  # LensSpecification
    0x0016004F: "X",  # LensMake
    0x00160050: "X",  # LensModel
    0x00160051: "X",  # LensSerialNumber
    0x00160070: "X",  # GPSVersionID
    0x00160071: "X",  # GPSLatitudeRef
    0x00160072: "X",  # GPSLatitude
    0x00160073: "X",  # GPSLongitudeRef
    0x00160074: "X",  # GPSLongitude
    0x00160075: "X",  # GPSAltitudeRef
    0x00160076: "X",  # GPSAltitude
    0x00160077: "X",  # GPSTimeStamp
    0x00160078: "X",  # GPSSatellites
    0x00160079: "X",  # GPSStatus
    0x0016007A: "X",  # GPSMeasureMode
    0x0016007B: "X",  # GPSDOP
    0x0016007C: "X",  # GPSSpeedRef
    0x0016007D: "X",  # GPSSpeed
    0x0016007E: "X",  # GPSTrackRef
    0x0016007F: "X",  # GPSTrack
    0x00160080: "X",  # GPSImgDirectionRef
    0x00160081: "X",  # GPSImgDirection
    0x00160082: "X",  # GPSMapDatum
    0x00160083: "X",  # GPSDestLatitudeRef
    0x00160084: "X",  # GPSDestLatitude
    0x00160085: "X",  # GPSDestLongitudeRef
    0x00160086: "X",  # GPSDestLongitude
    0x00160087: "X",  # GPSDestBearingRef
    0x00160088: "X",  # GPSDestBearing
    0x00160089: "X",  # GPSDestDistanceRef
    0x0016008A: "X",  # GPSDestDistance
    0x0016008B: "X",  # GPSProcessingMethod
    0x0016008C: "X",  # GPSAreaInformation
    0x0016008D: "X",  # GPSDateStamp
    0x0016008E: "X",  # GPSDifferential
    0x00180010: "Z/D",  # ContrastBolusAgent
    0x00180027: "X",  # InterventionDrugStopTime
    0x00180035: "X",  # InterventionDrugStartTime
    0x00181000: "X/Z/D",  # DeviceSerialNumber
    0x00181002: "U",  # DeviceUID
    0x00181004: "X",  # PlateID
    0x00181005: "X",  # GeneratorID
    0x00181007: "X",  # CassetteID
    0x00181008: "X",  # GantryID
    0x00181009: "X",  # UniqueDeviceIdentifier
    0x0018100A: "X",  # UDISequence
    0x0018100B: "U",  # ManufacturerDeviceClassUID
    0x00181012: "X",  # DateOfSecondaryCapture
    0x00181014: "X",  # TimeOfSecondaryCapture
    0x00181030: "X/D",  # ProtocolName
    0x00181042: "X",  # ContrastBolusStartTime
    0x00181043: "X",  # ContrastBolusStopTime
    0x00181072: "X",  # RadiopharmaceuticalStartTime
    0x00181073: "X",  # RadiopharmaceuticalStopTime
    0x00181078: "X",  # RadiopharmaceuticalStartDateTime
    0x00181079: "X",  # RadiopharmaceuticalStopDateTime
    0x001811BB: "D",  # AcquisitionFieldOfViewLabel
    0x00181200: "X",  # DateOfLastCalibration
    0x00181201: "X",  # TimeOfLastCalibration
    0x00181202: "X",  # DateTimeOfLastCalibration
    0x00181203: "Z",  # CalibrationDateTime
    0x00181204: "X",  # DateOfManufacture
    0x00181205: "X",  # DateOfInstallation
    0x00181400: "X/D",  # AcquisitionDeviceProcessingDescription
    0x00182042: "U",  # TargetUID
    0x00184000: "X",  # AcquisitionComments
    0x00185011: "X",  # TransducerIdentificationSequence
    0x0018700A: "X/D",  # DetectorID
    0x0018700C: "X/D",  # DateOfLastDetectorCalibration
    0x0018700E: "X/D",  # TimeOfLastDetectorCalibration
    0x00189074: "D",  # FrameAcquisitionDateTime
    0x00189151: "D",  # FrameReferenceDateTime
    0x00189185: "X",  # RespiratoryMotionCompensationTechniqueDescription
    0x00189367: "D",  # XRaySourceID
    0x00189369: "D",  # SourceStartDateTime
    0x0018936A: "D",  # SourceEndDateTime
    0x00189371: "D",  # XRayDetectorID
    0x00189373: "X",  # XRayDetectorLabel
    0x0018937B: "X",  # MultienergyAcquisitionDescription
    0x0018937F: "X",  # DecompositionDescription
    0x00189424: "X",  # AcquisitionProtocolDescription
    0x00189516: "X/D",  # StartAcquisitionDateTime
    0x00189517: "X/D",  # EndAcquisitionDateTime
    0x00189623: "D",  # FunctionalSyncPulse
    0x00189701: "D",  # DecayCorrectionDateTime
    0x00189804: "D",  # ExclusionStartDateTime
    0x00189919: "Z/D",  # InstructionPerformedDateTime
    0x00189937: "X",  # RequestedSeriesDescription
    0x0018A002: "X",  # ContributionDateTime
    0x0018A003: "X",  # ContributionDescription
    0x0020000D: "U",  # StudyInstanceUID
    0x0020000E: "U",  # SeriesInstanceUID
    0x00200010: "Z",  # StudyID
    0x00200027: "X",  # PyramidLabel
    0x00200052: "U",  # FrameOfReferenceUID
    0x00200200: "U",  # SynchronizationFrameOfReferenceUID
    0x00203401: "X",  # ModifyingDeviceID
    0x00203403: "X",  # ModifiedImageDate
    0x00203405: "X",  # ModifiedImageTime
    0x00203406: "X",  # ModifiedImageDescription
    0x00204000: "X",  # ImageComments
    0x00209158: "X",  # FrameComments
    0x00209161: "U",  # ConcatenationUID
    0x00209164: "U",  # DimensionOrganizationUID
    0x00281199: "U",  # PaletteColorLookupTableUID
    0x00281214: "U",  # LargePaletteColorLookupTableUID
    0x00284000: "X",  # ImagePresentationComments
    0x00320012: "X",  # StudyIDIssuer
    0x00320032: "X",  # StudyVerifiedDate
    0x00320033: "X",  # StudyVerifiedTime
    0x00320034: "X",  # StudyReadDate
    0x00320035: "X",  # StudyReadTime
    0x00321000: "X",  # ScheduledStudyStartDate
    0x00321001: "X",  # ScheduledStudyStartTime
    0x00321010: "X",  # ScheduledStudyStopDate
    0x00321011: "X",  # ScheduledStudyStopTime
    0x00321020: "X",  # ScheduledStudyLocation
    0x00321021: "X",  # ScheduledStudyLocationAETitle
    0x00321030: "X",  # ReasonForStudy
    0x00321032: "X",  # RequestingPhysician
    0x00321033: "X",  # RequestingService
    0x00321040: "X",  # StudyArrivalDate
    0x00321041: "X",  # StudyArrivalTime
    0x00321050: "X",  # StudyCompletionDate
    0x00321051: "X",  # StudyCompletionTime
    0x00321060: "X/Z",  # RequestedProcedureDescription
    0x00321066: "X",  # ReasonForVisit
    0x00321067: "X",  # ReasonForVisitCodeSequence
    0x00321070: "X",  # RequestedContrastAgent
    0x00324000: "X",  # StudyComments
    0x00340001: "D",  # FlowIdentifierSequence
    0x00340002: "D",  # FlowIdentifier
    0x00340005: "D",  # SourceIdentifier
    0x00340007: "D",  # FrameOriginTimestamp
    0x00380004: "X",  # ReferencedPatientAliasSequence
    0x00380010: "X",  # AdmissionID
    0x00380011: "X",  # IssuerOfAdmissionID
    0x00380014: "X",  # IssuerOfAdmissionIDSequence
    0x0038001A: "X",  # ScheduledAdmissionDate
    0x0038001B: "X",  # ScheduledAdmissionTime
    0x0038001C: "X",  # ScheduledDischargeDate
    0x0038001D: "X",  # ScheduledDischargeTime
    0x0038001E: "X",  # ScheduledPatientInstitutionResidence
    0x00380020: "X",  # AdmittingDate
    0x00380021: "X",  # AdmittingTime
    0x00380030: "X",  # DischargeDate
    0x00380032: "X",  # DischargeTime
    0x00380040: "X",  # DischargeDiagnosisDescription
    0x00380050: "X",  # SpecialNeeds
    0x00380060: "X",  # ServiceEpisodeID
    0x00380061: "X",  # IssuerOfServiceEpisodeID
    0x00380062: "X",  # ServiceEpisodeDescription
    0x00380064: "X",  # IssuerOfServiceEpisodeIDSequence
    0x00380300: "X",  # CurrentPatientLocation
    0x00380400: "X",  # PatientInstitutionResidence
    0x00380500: "X",  # PatientState
    0x00384000: "X",  # VisitComments
    0x003A0310: "U",  # MultiplexGroupUID
    0x003A0314: "D",  # ImpedanceMeasurementDateTime
    0x003A0329: "X",  # WaveformFilterDescription
    0x003A032B: "X",  # FilterLookupTableDescription
    0x00400001: "X",  # ScheduledStationAETitle
    0x00400002: "X",  # ScheduledProcedureStepStartDate
    0x00400003: "X",  # ScheduledProcedureStepStartTime
    0x00400004: "X",  # ScheduledProcedureStepEndDate
    0x00400005: "X",  # ScheduledProcedureStepEndTime
    0x00400006: "X",  # ScheduledPerformingPhysicianName
    0x00400007: "X",  # ScheduledProcedureStepDescription
    0x00400009: "X",  # ScheduledProcedureStepID
    0x0040000B: "X",  # ScheduledPerformingPhysicianIdentificationSequence
    0x00400010: "X",  # ScheduledStationName
    0x00400011: "X",  # ScheduledProcedureStepLocation
    0x00400012: "X",  # PreMedication
    0x00400241: "X",  # PerformedStationAETitle
    0x00400242: "X",  # PerformedStationName
    0x00400243: "X",  # PerformedLocation
    0x00400244: "X",  # PerformedProcedureStepStartDate
    0x00400245: "X",  # PerformedProcedureStepStartTime
    0x00400250: "X",  # PerformedProcedureStepEndDate
    0x00400251: "X",  # PerformedProcedureStepEndTime
    0x00400253: "X",  # PerformedProcedureStepID
    0x00400254: "X",  # PerformedProcedureStepDescription
    0x00400275: "X",  # RequestAttributesSequence
    0x00400280: "X",  # CommentsOnThePerformedProcedureStep
    0x00400310: "X",  # CommentsOnRadiationDose
    0x0040050A: "X",  # SpecimenAccessionNumber
    0x00400512: "D",  # ContainerIdentifier
    0x00400513: "Z",  # IssuerOfTheContainerIdentifierSequence
    0x0040051A: "X",  # ContainerDescription
    0x00400551: "D",  # SpecimenIdentifier
    0x00400554: "U",  # SpecimenUID
    0x00400555: "X/Z",  # AcquisitionContextSequence
    0x00400562: "Z",  # IssuerOfTheSpecimenIdentifierSequence
    0x00400600: "X",  # SpecimenShortDescription
    0x00400602: "X",  # SpecimenDetailedDescription
    0x00400610: "Z",  # SpecimenPreparationSequence
    0x004006FA: "X",  # SlideIdentifier
    0x00401001: "X",  # RequestedProcedureID
    0x00401002: "X",  # ReasonForTheRequestedProcedure
    0x00401004: "X",  # PatientTransportArrangements
    0x00401005: "X",  # RequestedProcedureLocation
    0x0040100A: "X",  # ReasonForRequestedProcedureCodeSequence
    0x00401010: "X",  # NamesOfIntendedRecipientsOfResults
    0x00401011: "X",  # IntendedRecipientsOfResultsIdentificationSequence
    0x00401101: "D",  # PersonIdentificationCodeSequence
    0x00401102: "X",  # PersonAddress
    0x00401103: "X",  # PersonTelephoneNumbers
    0x00401104: "X",  # PersonTelecomInformation
    0x00401400: "X",  # RequestedProcedureComments
    0x00402001: "X",  # ReasonForTheImagingServiceRequest
    0x00402004: "X",  # IssueDateOfImagingServiceRequest
    0x00402005: "X",  # IssueTimeOfImagingServiceRequest
    0x00402008: "X",  # OrderEnteredBy
    0x00402009: "X",  # OrderEntererLocation
    0x00402010: "X",  # OrderCallbackPhoneNumber
    0x00402011: "X",  # OrderCallbackTelecomInformation
    0x00402016: "Z",  # PlacerOrderNumberImagingServiceRequest
    0x00402017: "Z",  # FillerOrderNumberImagingServiceRequest
    0x00402400: "X",  # ImagingServiceRequestComments
    0x00403001: "X",  # ConfidentialityConstraintOnPatientDataDescription
    0x00404005: "X",  # ScheduledProcedureStepStartDateTime
    0x00404008: "X",  # ScheduledProcedureStepExpirationDateTime
    0x00404010: "X",  # ScheduledProcedureStepModificationDateTime
    0x00404011: "X",  # ExpectedCompletionDateTime
    0x00404023: "U",  # ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
    0x00404025: "X",  # ScheduledStationNameCodeSequence
    0x00404027: "X",  # ScheduledStationGeographicLocationCodeSequence
    0x00404028: "X",  # PerformedStationNameCodeSequence
    0x00404030: "X",  # PerformedStationGeographicLocationCodeSequence
    0x00404034: "X",  # ScheduledHumanPerformersSequence
    0x00404035: "X",  # ActualHumanPerformersSequence
    0x00404036: "X",  # HumanPerformerOrganization
    0x00404037: "X",  # HumanPerformerName
    0x00404050: "X",  # PerformedProcedureStepStartDateTime
    0x00404051: "X",  # PerformedProcedureStepEndDateTime
    0x00404052: "X",  # ProcedureStepCancellationDateTime
    0x0040A023: "X",  # FindingsGroupRecordingDateTrial
    0x0040A024: "X",  # FindingsGroupRecordingTimeTrial
    0x0040A027: "D",  # VerifyingOrganization
    0x0040A030: "D",  # VerificationDateTime
    0x0040A032: "X/D",  # ObservationDateTime
    0x0040A033: "X",  # ObservationStartDateTime
    0x0040A034: "X",  # (not in pydicom's dictionary)
    0x0040A035: "X",  # (not in pydicom's dictionary)
    0x0040A073: "D",  # VerifyingObserverSequence
    0x0040A075: "D",  # VerifyingObserverName
    0x0040A078: "X",  # AuthorObserverSequence
    0x0040A07A: "X",  # ParticipantSequence
    0x0040A07C: "X",  # CustodialOrganizationSequence
    0x0040A082: "Z",  # ParticipationDateTime
    0x0040A088: "Z",  # VerifyingObserverIdentificationCodeSequence
    0x0040A110: "X",  # DateOfDocumentOrVerbalTransactionTrial
    0x0040A112: "X",  # TimeOfDocumentCreationOrVerbalTransactionTrial
    0x0040A120: "D",  # DateTime
    0x0040A121: "D",  # Date
    0x0040A122: "D",  # Time
    0x0040A123: "D",  # PersonName
    0x0040A124: "U",  # UID
    0x0040A13A: "D",  # ReferencedDateTime
    0x0040A171: "U",  # ObservationUID
    0x0040A172: "U",  # ReferencedObservationUIDTrial
    0x0040A192: "X",  # ObservationDateTrial
    0x0040A193: "X",  # ObservationTimeTrial
    0x0040A307: "X",  # CurrentObserverTrial
    0x0040A352: "X",  # VerbalSourceTrial
    0x0040A353: "X",  # AddressTrial
    0x0040A354: "X",  # TelephoneNumberTrial
    0x0040A358: "X",  # VerbalSourceIdentifierCodeSequenceTrial
    0x0040A402: "U",  # ObservationSubjectUIDTrial
    0x0040A730: "D",  # ContentSequence
    0x0040B034: "X",  # (not in pydicom's dictionary)
    0x0040B036: "X",  # (not in pydicom's dictionary)
    0x0040B03B: "X",  # (not in pydicom's dictionary)
    0x0040B03F: "X",  # (not in pydicom's dictionary)
    0x0040DB06: "X",  # TemplateVersion
    0x0040DB07: "X",  # TemplateLocalVersion
    0x0040DB0C: "U",  # TemplateExtensionOrganizationUID
    0x0040DB0D: "U",  # TemplateExtensionCreatorUID
    0x0040E004: "X",  # HL7DocumentEffectiveTime
    0x00420011: "D",  # EncapsulatedDocument
    0x00440004: "X",  # ApprovalStatusDateTime
    0x0044000B: "X",  # ProductExpirationDateTime
    0x00440010: "X",  # SubstanceAdministrationDateTime
    0x00440104: "D",  # AssertionDateTime
    0x00440105: "X",  # AssertionExpirationDateTime
    0x0050001B: "X",  # ContainerComponentID
    0x00500020: "X",  # DeviceDescription
    0x00500021: "X",  # LongDeviceDescription
    0x00620021: "U",  # TrackingUID
    0x00640003: "U",  # SourceFrameOfReferenceUID
    0x00686226: "D",  # EffectiveDateTime
    0x00686270: "D",  # InformationIssueDateTime
    0x006A0003: "D",  # AnnotationGroupUID
    0x006A0005: "D",  # AnnotationGroupLabel
    0x006A0006: "X",  # AnnotationGroupDescription
    0x00700001: "D",  # GraphicAnnotationSequence
    0x00700082: "X",  # PresentationCreationDate
    0x00700083: "X",  # PresentationCreationTime
    0x00700084: "Z/D",  # ContentCreatorName
    0x00700086: "X",  # ContentCreatorIdentificationCodeSequence
    0x0070031A: "U",  # FiducialUID
    0x00701101: "U",  # PresentationDisplayCollectionUID
    0x00701102: "U",  # PresentationSequenceCollectionUID
    0x0072000A: "D",  # HangingProtocolCreationDateTime
    0x0072005E: "D",  # SelectorAEValue
    0x0072005F: "D",  # SelectorASValue
    0x00720061: "D",  # SelectorDAValue
    0x00720063: "D",  # SelectorDTValue
    0x00720065: "D",  # SelectorOBValue
    0x00720066: "D",  # SelectorLOValue
    0x00720068: "D",  # SelectorLTValue
    0x0072006A: "D",  # SelectorPNValue
    0x0072006B: "D",  # SelectorTMValue
    0x0072006C: "D",  # SelectorSHValue
    0x0072006D: "D",  # SelectorUNValue
    0x0072006E: "D",  # SelectorSTValue
    0x00720070: "D",  # SelectorUTValue
    0x00720071: "D",  # SelectorURValue
    0x00741234: "X",  # ReceivingAE
    0x00741236: "X",  # RequestingAE
    0x00880140: "U",  # StorageMediaFileSetUID
    0x00880200: "X",  # IconImageSequence
    0x00880904: "X",  # TopicTitle
    0x00880906: "X",  # TopicSubject
    0x00880910: "X",  # TopicAuthor
    0x00880912: "X",  # TopicKeywords
    0x01000420: "X",  # SOPAuthorizationDateTime
    0x04000100: "U",  # DigitalSignatureUID
    0x04000105: "D",  # DigitalSignatureDateTime
    0x04000115: "D",  # CertificateOfSigner
    0x04000310: "X",  # CertifiedTimestamp
    0x04000402: "X",  # ReferencedDigitalSignatureSequence
    0x04000403: "X",  # ReferencedSOPInstanceMACSequence
    0x04000404: "X",  # MAC
    0x04000550: "X",  # ModifiedAttributesSequence
    0x04000551: "X",  # NonconformingModifiedAttributesSequence
    0x04000552: "X",  # NonconformingDataElementValue
    0x04000561: "X",  # OriginalAttributesSequence
    0x04000562: "D",  # AttributeModificationDateTime
    0x04000563: "D",  # ModifyingSystem
    0x04000564: "Z",  # SourceOfPreviousValues
    0x04000565: "D",  # ReasonForTheAttributeModification
    0x04000600: "X",  # InstanceOriginStatus
    0x20300020: "X",  # TextString
    0x21000040: "X",  # CreationDate
    0x21000050: "X",  # CreationTime
    0x21000070: "X",  # Originator
    0x21000140: "D",  # DestinationAE
    0x22000002: "X/Z",  # LabelText
    0x22000005: "X/Z",  # BarcodeValue
    0x30020121: "X",  # PositionAcquisitionTemplateName
    0x30020123: "X",  # PositionAcquisitionTemplateDescription
    0x30060002: "D",  # StructureSetLabel
    0x30060004: "X",  # StructureSetName
    0x30060006: "X",  # StructureSetDescription
    0x30060008: "Z",  # StructureSetDate
    0x30060009: "Z",  # StructureSetTime
    0x30060024: "U",  # ReferencedFrameOfReferenceUID
    0x30060026: "Z",  # ROIName
    0x30060028: "X",  # ROIDescription
    0x3006002D: "X",  # ROIDateTime
    0x3006002E: "X",  # ROIObservationDateTime
    0x30060038: "X",  # ROIGenerationDescription
    0x3006004D: "X",  # ROICreatorSequence
    0x3006004E: "X",  # ROIInterpreterSequence
    0x30060085: "X",  # ROIObservationLabel
    0x30060088: "X",  # ROIObservationDescription
    0x300600A6: "Z",  # ROIInterpreter
    0x300600C2: "U",  # RelatedFrameOfReferenceUID
    0x30080024: "D",  # TreatmentControlPointDate
    0x30080025: "D",  # TreatmentControlPointTime
    0x30080054: "X/D",  # FirstTreatmentDate
    0x30080056: "X/D",  # MostRecentTreatmentDate
    0x30080105: "X/Z",  # SourceSerialNumber
    0x30080162: "D",  # SafePositionExitDate
    0x30080164: "D",  # SafePositionExitTime
    0x30080166: "D",  # SafePositionReturnDate
    0x30080168: "D",  # SafePositionReturnTime
    0x30080250: "X/D",  # TreatmentDate
    0x30080251: "X/D",  # TreatmentTime
    0x300A0002: "D",  # RTPlanLabel
    0x300A0003: "X",  # RTPlanName
    0x300A0004: "X",  # RTPlanDescription
    0x300A0006: "X/D",  # RTPlanDate
    0x300A0007: "X/D",  # RTPlanTime
    0x300A000B: "X",  # TreatmentSites
    0x300A000E: "X",  # PrescriptionDescription
    0x300A0013: "U",  # DoseReferenceUID
    0x300A0016: "X",  # DoseReferenceDescription
    0x300A0054: "U",  # TableTopPositionAlignmentUID
    0x300A0072: "X",  # FractionGroupDescription
    0x300A0083: "U",  # ReferencedDoseReferenceUID
    0x300A00B2: "X/Z",  # TreatmentMachineName
    0x300A00C3: "X",  # BeamDescription
    0x300A00DD: "X",  # BolusDescription
    0x300A0196: "X",  # FixationDeviceDescription
    0x300A01A6: "X",  # ShieldingDeviceDescription
    0x300A01B2: "X",  # SetupTechniqueDescription
    0x300A0216: "X",  # SourceManufacturer
    0x300A022C: "D",  # SourceStrengthReferenceDate
    0x300A022E: "D",  # SourceStrengthReferenceTime
    0x300A02EB: "X",  # CompensatorDescription
    0x300A0608: "D",  # TreatmentPositionGroupLabel
    0x300A0609: "U",  # TreatmentPositionGroupUID
    0x300A0611: "Z",  # RTAccessoryHolderSlotID
    0x300A0615: "Z",  # RTAccessoryDeviceSlotID
    0x300A0619: "D",  # RadiationDoseIdentificationLabel
    0x300A0623: "D",  # RadiationDoseInVivoMeasurementLabel
    0x300A062A: "D",  # RTToleranceSetLabel
    0x300A0650: "U",  # PatientSetupUID
    0x300A0676: "X",  # EquipmentFrameOfReferenceDescription
    0x300A067C: "D",  # RadiationGenerationModeLabel
    0x300A067D: "Z",  # RadiationGenerationModeDescription
    0x300A0700: "U",  # TreatmentSessionUID
    0x300A0734: "D",  # TreatmentToleranceViolationDescription
    0x300A0736: "D",  # TreatmentToleranceViolationDateTime
    0x300A073A: "D",  # RecordedRTControlPointDateTime
    0x300A0741: "D",  # InterlockDateTime
    0x300A0742: "D",  # InterlockDescription
    0x300A0760: "D",  # OverrideDateTime
    0x300A0783: "D",  # InterlockOriginDescription
    0x300A0785: "U",  # ReferencedTreatmentPositionGroupUID
    0x300A078E: "X",  # PatientTreatmentPreparationProcedureParameterDescription
    0x300A0792: "X",  # PatientTreatmentPreparationMethodDescription
    0x300A0794: "X",  # PatientSetupPhotoDescription
    0x300A079A: "X",  # DisplacementReferenceLabel
    0x300C0113: "X",  # ReasonForOmissionDescription
    0x300C0127: "D",  # BeamHoldTransitionDateTime
    0x300E0004: "Z",  # ReviewDate
    0x300E0005: "Z",  # ReviewTime
    0x300E0008: "X/Z",  # ReviewerName
    0x30100006: "U",  # ConceptualVolumeUID
    0x3010000B: "U",  # ReferencedConceptualVolumeUID
    0x3010000F: "Z",  # ConceptualVolumeCombinationDescription
    0x30100013: "U",  # ConstituentConceptualVolumeUID
    0x30100015: "U",  # SourceConceptualVolumeUID
    0x30100017: "Z",  # ConceptualVolumeDescription
    0x3010001B: "Z",  # DeviceAlternateIdentifier
    0x3010002D: "D",  # DeviceLabel
    0x30100031: "U",  # ReferencedFiducialsUID
    0x30100033: "D",  # UserContentLabel
    0x30100034: "D",  # UserContentLongLabel
    0x30100035: "D",  # EntityLabel
    0x30100036: "X",  # EntityName
    0x30100037: "X",  # EntityDescription
    0x30100038: "D",  # EntityLongLabel
    0x3010003B: "U",  # RTTreatmentPhaseUID
    0x30100043: "Z",  # ManufacturerDeviceIdentifier
    0x3010004C: "X/D",  # IntendedPhaseStartDate
    0x3010004D: "X/D",  # IntendedPhaseEndDate
    0x30100054: "D",  # RTPrescriptionLabel
    0x30100056: "X/D",  # RTTreatmentApproachLabel
    0x3010005A: "Z",  # RTPhysicianIntentNarrative
    0x3010005C: "Z",  # ReasonForSuperseding
    0x30100061: "X",  # PriorTreatmentDoseDescription
    0x3010006E: "U",  # DosimetricObjectiveUID
    0x3010006F: "U",  # ReferencedDosimetricObjectiveUID
    0x30100077: "X/D",  # TreatmentSite
    0x3010007A: "Z",  # TreatmentTechniqueNotes
    0x3010007B: "Z",  # PrescriptionNotes
    0x3010007F: "Z",  # FractionationNotes
    0x30100081: "Z",  # PrescriptionNotesSequence
    0x30100085: "X",  # IntendedFractionStartTime
    0x40000010: "X",  # Arbitrary
    0x40004000: "X",  # TextComments
    0x40080040: "X",  # ResultsID
    0x40080042: "X",  # ResultsIDIssuer
    0x40080100: "X",  # InterpretationRecordedDate
    0x40080101: "X",  # InterpretationRecordedTime
    0x40080102: "X",  # InterpretationRecorder
    0x40080108: "X",  # InterpretationTranscriptionDate
    0x40080109: "X",  # InterpretationTranscriptionTime
    0x4008010A: "X",  # InterpretationTranscriber
    0x4008010B: "X",  # InterpretationText
    0x4008010C: "X",  # InterpretationAuthor
    0x40080111: "X",  # InterpretationApproverSequence
    0x40080112: "X",  # InterpretationApprovalDate
    0x40080113: "X",  # InterpretationApprovalTime
    0x40080114: "X",  # PhysicianApprovingInterpretation
    0x40080115: "X",  # InterpretationDiagnosisDescription
    0x40080118: "X",  # ResultsDistributionListSequence
    0x40080119: "X",  # DistributionName
    0x4008011A: "X",  # DistributionAddress
    0x40080200: "X",  # InterpretationID
    0x40080202: "X",  # InterpretationIDIssuer
    0x40080300: "X",  # Impressions
    0x40084000: "X",  # ResultsComments
    0xFFFAFFFA: "X",  # DigitalSignaturesSequence
    0xFFFCFFFC: "X",  # DataSetTrailingPadding
}

REPEATING_GROUPS: dict[tuple[int, int, int], str] = {
    # (group mask, group value, element or -1 for any): curves (50xx,xxxx) and overlay data and
    # comments (60xx,3000) and (60xx,4000), removed by the basic profile.
    (0xFF00, 0x5000, -1): "X",  # Curve Data (retired)
    (0xFF01, 0x6000, 0x3000): "X",  # OverlayData
    (0xFF01, 0x6000, 0x4000): "X",  # OverlayComments
}

CLEAN_DESCRIPTORS: frozenset[int] = frozenset(
    {
        0x00081030,  # StudyDescription
        0x0008103E,  # SeriesDescription
        0x00081080,  # AdmittingDiagnosesDescription
        0x00081084,  # AdmittingDiagnosesCodeSequence
        0x00081088,  # PyramidDescription
        0x00081301,  # (not in pydicom's dictionary)
        0x00081302,  # (not in pydicom's dictionary)
        0x00081303,  # (not in pydicom's dictionary)
        0x00081304,  # (not in pydicom's dictionary)
        0x00082111,  # DerivationDescription
        0x00084000,  # IdentifyingComments
        0x00100016,  # (not in pydicom's dictionary)
        0x00100042,  # (not in pydicom's dictionary)
        0x00100045,  # (not in pydicom's dictionary)
        0x00102000,  # MedicalAlerts
        0x00102110,  # Allergies
        0x00102180,  # Occupation
        0x001021B0,  # AdditionalPatientHistory
        0x00104000,  # PatientComments
        0x00120051,  # ClinicalTrialTimePointDescription
        0x00120072,  # ClinicalTrialSeriesDescription
        0x0016002B,  # MakerNote
        0x0016004B,  # DeviceSettingDescription
        0x00180010,  # ContrastBolusAgent
        0x00181030,  # ProtocolName
        0x001811BB,  # AcquisitionFieldOfViewLabel
        0x00181400,  # AcquisitionDeviceProcessingDescription
        0x00184000,  # AcquisitionComments
        0x00189185,  # RespiratoryMotionCompensationTechniqueDescription
        0x0018937B,  # MultienergyAcquisitionDescription
        0x0018937F,  # DecompositionDescription
        0x00189424,  # AcquisitionProtocolDescription
        0x00189937,  # RequestedSeriesDescription
        0x0018A003,  # ContributionDescription
        0x00200027,  # PyramidLabel
        0x00204000,  # ImageComments
        0x00209158,  # FrameComments
        0x00321030,  # ReasonForStudy
        0x00321060,  # RequestedProcedureDescription
        0x00321066,  # ReasonForVisit
        0x00321067,  # ReasonForVisitCodeSequence
        0x00321070,  # RequestedContrastAgent
        0x00324000,  # StudyComments
        0x00380040,  # DischargeDiagnosisDescription
        0x00380062,  # ServiceEpisodeDescription
        0x00380500,  # PatientState
        0x00384000,  # VisitComments
        0x003A0329,  # WaveformFilterDescription
        0x003A032B,  # FilterLookupTableDescription
        0x00400007,  # ScheduledProcedureStepDescription
        0x00400254,  # PerformedProcedureStepDescription
        0x00400275,  # RequestAttributesSequence
        0x00400280,  # CommentsOnThePerformedProcedureStep
        0x00400310,  # CommentsOnRadiationDose
        0x0040051A,  # ContainerDescription
        0x00400600,  # SpecimenShortDescription
        0x00400602,  # SpecimenDetailedDescription
        0x00401002,  # ReasonForTheRequestedProcedure
        0x0040100A,  # ReasonForRequestedProcedureCodeSequence
        0x00401400,  # RequestedProcedureComments
        0x00402001,  # ReasonForTheImagingServiceRequest
        0x00402400,  # ImagingServiceRequestComments
        0x0040B03B,  # (not in pydicom's dictionary)
        0x0040B03F,  # (not in pydicom's dictionary)
        0x00500021,  # LongDeviceDescription
        0x006A0005,  # AnnotationGroupLabel
        0x006A0006,  # AnnotationGroupDescription
        0x00720066,  # SelectorLOValue
        0x00720068,  # SelectorLTValue
        0x0072006C,  # SelectorSHValue
        0x0072006E,  # SelectorSTValue
        0x00720070,  # SelectorUTValue
        0x04000565,  # ReasonForTheAttributeModification
        0x22000002,  # LabelText
        0x30020121,  # PositionAcquisitionTemplateName
        0x30020123,  # PositionAcquisitionTemplateDescription
        0x30060002,  # StructureSetLabel
        0x30060004,  # StructureSetName
        0x30060006,  # StructureSetDescription
        0x30060026,  # ROIName
        0x30060028,  # ROIDescription
        0x30060038,  # ROIGenerationDescription
        0x30060085,  # ROIObservationLabel
        0x30060088,  # ROIObservationDescription
        0x300A0002,  # RTPlanLabel
        0x300A0003,  # RTPlanName
        0x300A0004,  # RTPlanDescription
        0x300A000B,  # TreatmentSites
        0x300A000E,  # PrescriptionDescription
        0x300A0016,  # DoseReferenceDescription
        0x300A0072,  # FractionGroupDescription
        0x300A00C3,  # BeamDescription
        0x300A00DD,  # BolusDescription
        0x300A0196,  # FixationDeviceDescription
        0x300A01A6,  # ShieldingDeviceDescription
        0x300A01B2,  # SetupTechniqueDescription
        0x300A02EB,  # CompensatorDescription
        0x300A0608,  # TreatmentPositionGroupLabel
        0x300A0619,  # RadiationDoseIdentificationLabel
        0x300A0623,  # RadiationDoseInVivoMeasurementLabel
        0x300A062A,  # RTToleranceSetLabel
        0x300A0676,  # EquipmentFrameOfReferenceDescription
        0x300A067C,  # RadiationGenerationModeLabel
        0x300A067D,  # RadiationGenerationModeDescription
        0x300A0734,  # TreatmentToleranceViolationDescription
        0x300A0742,  # InterlockDescription
        0x300A0783,  # InterlockOriginDescription
        0x300A078E,  # PatientTreatmentPreparationProcedureParameterDescription
        0x300A0792,  # PatientTreatmentPreparationMethodDescription
        0x300A0794,  # PatientSetupPhotoDescription
        0x300A079A,  # DisplacementReferenceLabel
        0x300C0113,  # ReasonForOmissionDescription
        0x3010000F,  # ConceptualVolumeCombinationDescription
        0x30100017,  # ConceptualVolumeDescription
        0x30100033,  # UserContentLabel
        0x30100034,  # UserContentLongLabel
        0x30100035,  # EntityLabel
        0x30100036,  # EntityName
        0x30100037,  # EntityDescription
        0x30100038,  # EntityLongLabel
        0x30100054,  # RTPrescriptionLabel
        0x30100056,  # RTTreatmentApproachLabel
        0x3010005A,  # RTPhysicianIntentNarrative
        0x3010005C,  # ReasonForSuperseding
        0x30100061,  # PriorTreatmentDoseDescription
        0x30100077,  # TreatmentSite
        0x3010007A,  # TreatmentTechniqueNotes
        0x3010007B,  # PrescriptionNotes
        0x3010007F,  # FractionationNotes
        0x30100081,  # PrescriptionNotesSequence
        0x4008010B,  # InterpretationText
        0x40080115,  # InterpretationDiagnosisDescription
        0x40080300,  # Impressions
        0x40084000,  # ResultsComments
    }
)
"""Attributes the Clean Descriptors Option cleans (C) instead of removing."""

RETAIN_UIDS: frozenset[int] = frozenset(
    {
        0x00001000,  # AffectedSOPInstanceUID
        0x00001001,  # RequestedSOPInstanceUID
        0x00020003,  # MediaStorageSOPInstanceUID
        0x00041511,  # ReferencedSOPInstanceUIDInFile
        0x00080014,  # InstanceCreatorUID
        0x00080017,  # AcquisitionUID
        0x00080018,  # SOPInstanceUID
        0x00080019,  # PyramidUID
        0x00080058,  # FailedSOPInstanceUIDList
        0x00081110,  # ReferencedStudySequence
        0x00081111,  # ReferencedPerformedProcedureStepSequence
        0x00081120,  # ReferencedPatientSequence
        0x00081140,  # ReferencedImageSequence
        0x00081155,  # ReferencedSOPInstanceUID
        0x00081195,  # TransactionUID
        0x00082112,  # SourceImageSequence
        0x00083010,  # IrradiationEventUID
        0x00181002,  # DeviceUID
        0x0018100B,  # ManufacturerDeviceClassUID
        0x00182042,  # TargetUID
        0x0020000D,  # StudyInstanceUID
        0x0020000E,  # SeriesInstanceUID
        0x00200052,  # FrameOfReferenceUID
        0x00200200,  # SynchronizationFrameOfReferenceUID
        0x00209161,  # ConcatenationUID
        0x00209164,  # DimensionOrganizationUID
        0x00281199,  # PaletteColorLookupTableUID
        0x00281214,  # LargePaletteColorLookupTableUID
        0x003A0310,  # MultiplexGroupUID
        0x00400554,  # SpecimenUID
        0x00404023,  # ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
        0x0040A171,  # ObservationUID
        0x0040A172,  # ReferencedObservationUIDTrial
        0x0040A402,  # ObservationSubjectUIDTrial
        0x0040DB0C,  # TemplateExtensionOrganizationUID
        0x0040DB0D,  # TemplateExtensionCreatorUID
        0x00620021,  # TrackingUID
        0x00640003,  # SourceFrameOfReferenceUID
        0x006A0003,  # AnnotationGroupUID
        0x0070031A,  # FiducialUID
        0x00701101,  # PresentationDisplayCollectionUID
        0x00701102,  # PresentationSequenceCollectionUID
        0x00880140,  # StorageMediaFileSetUID
        0x30060024,  # ReferencedFrameOfReferenceUID
        0x300600C2,  # RelatedFrameOfReferenceUID
        0x300A0013,  # DoseReferenceUID
        0x300A0054,  # TableTopPositionAlignmentUID
        0x300A0083,  # ReferencedDoseReferenceUID
        0x300A0609,  # TreatmentPositionGroupUID
        0x300A0650,  # PatientSetupUID
        0x300A0700,  # TreatmentSessionUID
        0x300A0785,  # ReferencedTreatmentPositionGroupUID
        0x30100006,  # ConceptualVolumeUID
        0x3010000B,  # ReferencedConceptualVolumeUID
        0x30100013,  # ConstituentConceptualVolumeUID
        0x30100015,  # SourceConceptualVolumeUID
        0x30100031,  # ReferencedFiducialsUID
        0x3010003B,  # RTTreatmentPhaseUID
        0x3010006E,  # DosimetricObjectiveUID
        0x3010006F,  # ReferencedDosimetricObjectiveUID
    }
)
"""Attributes the Retain UIDs Option keeps (K)."""
